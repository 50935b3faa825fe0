"""The embedded server's log after every other test of this directory has run against it
(modules are collected in name order: this one comes last)."""


def test_the_log_says_embedded_stores_and_holds_no_traceback(embedded_serve):
    log = embedded_serve.log()
    assert "embedded" in log.lower() and "in-process" in log
    assert "Traceback" not in log, log[-4000:]
