// PM2: `pm2 start deploy/pm2/ecosystem.config.js && pm2 save` (from the bundle's directory).
// PM2 restarts the supervisor, so botkeeper runs in outer-supervisor mode: the supervisor is the
// process PM2 watches (no run_24_7.sh, no auto_recovery), and it supervises the bot itself.
const path = require("path");
const root = path.resolve(__dirname, "..", "..");

module.exports = {
  apps: [
    {
      name: "botkeeper",
      cwd: root,
      script: "python3",                   // or the full path of your virtualenv's python
      args: ["-m", "botkeeper", "start"],
      interpreter: "none",                 // python3 is the program itself, not a Node script
      env: {
        BOTKEEPER_HOME: root,
        BOTKEEPER_OUTER: "pm2",
        PYTHONUNBUFFERED: "1",
      },
      autorestart: true,
      restart_delay: 2000,                 // ms between restarts of the supervisor
      exp_backoff_restart_delay: 500,      // and back off while it keeps failing
      max_restarts: 50,
      min_uptime: "10s",
      stop_exit_codes: [78],               // 78 = a setting is wrong (see pm2 logs): no restart loop
      kill_timeout: 20000,                 // ms of SIGTERM grace: the slowest KILL_TIMEOUT (10 s) + margin
      treekill: false,                     // SIGTERM the supervisor only: it stops its components
      merge_logs: true,
      time: true,
    },
  ],
};
