"""The bot component (`python main.py`; the supervisor runs it). Your code goes in handlers.py."""

from botkeeper.bot import main

if __name__ == "__main__":
    raise SystemExit(main())
