"""The unchanged bot, tested offline with botkeeper's pytest plugin: its own commands, the built-ins
botkeeper adds, and a button pressed by its text."""


def test_weather(chat):
    chat.send("/weather")
    assert "Sunny" in chat.expect_reply()


def test_builtin_ping_without_editing_the_bot(chat):
    chat.send("/ping")
    assert chat.expect_reply("pong")


def test_press_a_button_by_its_text(chat):
    chat.send("/umbrella")
    assert chat.expect_reply("Going out")
    chat.press("Yes")
    assert "No umbrella" in chat.expect_reply()
