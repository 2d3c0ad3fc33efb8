"""Testing your own bot offline with botkeeper's pytest plugin (`pip install botkeeper` registers it;
in a checkout: `python -m pytest -p botkeeper.testing examples/ptb_bot`)."""


def test_price(chat):
    chat.send("/price")
    assert "2.50 EUR" in chat.expect_reply("coffee")


def test_own_start_and_builtin_ping(chat):
    chat.send("/start")
    assert "coffee bot" in chat.expect_reply()  # the bot's own /start, not botkeeper's
    chat.send("/ping")
    assert chat.expect_reply("pong")  # attach() added /ping: the bot has none of its own


def test_help_lists_docstrings(chat):
    chat.send("/help")
    assert "/price - the price of a coffee" in chat.expect_reply("Commands")
