"""The model-log oracle (harness/modellog.py): an error or exception the model logged fails
the run, with its traceback; warnings and info do not."""

import pytest

from harness.errors import LabError
from harness.modellog import ModelLogError, ModelLogWatcher

# device/cli.py's format: "name LEVEL: message", log.exception adds the traceback
EXCEPTION = """fifolab.qmp ERROR: command fault-list failed
Traceback (most recent call last):
  File "/x/device/qmp.py", line 466, in _dispatch
    return handler(args)
ZeroDivisionError: division by zero
"""


def test_an_exception_is_one_report_with_its_traceback(tmp_path):
    log = tmp_path / "model.log"
    log.write_text("fifolab.device INFO: device 0 ready\n"
                   "fifolab.wire WARNING: refusing a second host wire client\n")
    w = ModelLogWatcher(log)
    w.check()                                        # info and warnings are not reports
    with open(log, "a") as f:
        f.write(EXCEPTION + "fifolab.device INFO: after\n")
    with pytest.raises(ModelLogError) as exc:
        w.check()
    assert isinstance(exc.value, LabError)
    (report,) = exc.value.reports
    assert report.lines[0].endswith("command fault-list failed")
    assert report.lines[-2] == "ZeroDivisionError: division by zero"
    assert "device model error" in str(exc.value)
    w.check()                                        # reported once


def test_a_line_still_being_written_waits_for_its_end(tmp_path):
    log = tmp_path / "model.log"
    log.write_text("fifolab.ivshmem CRIT")
    w = ModelLogWatcher(log)
    assert w.poll() == []
    with open(log, "a") as f:
        f.write("ICAL: doorbell handler failed\n")
    assert [r.lines[0] for r in w.poll()] == ["fifolab.ivshmem CRITICAL: doorbell handler failed"]


def test_skip_existing_judges_only_what_comes_later(tmp_path):
    log = tmp_path / "model.log"
    log.write_text(EXCEPTION)
    w = ModelLogWatcher(log)
    w.skip_existing()
    w.check()
