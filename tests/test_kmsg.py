from harness.kmsg import KernelLogWatcher, find_reports


def test_reports_found_with_their_trace():
    lines = ["[ 1.0] fifolab: module verification failed: signature missing - tainting kernel",
             "[ 2.0] ------------[ cut here ]------------",
             "[ 2.0] WARNING: CPU: 1 PID: 7 at drivers/x.c:10 f+0x1/0x2",
             "[ 2.0] Call Trace:", "[ 2.0]  <TASK>",
             "[ 3.0] BUG: kernel NULL pointer dereference, address: 0000000000000008"]
    reports = find_reports(lines)
    assert [r.kind for r in reports] == ["WARNING"]
    assert "Call Trace:" in reports[0].lines[1]
    assert "BUG:" in reports[0].lines[-1]


def test_each_kind():
    for text, kind in [("BUG: sleeping function called from invalid context", "BUG"),
                       ("general protection fault, probably for non-canonical", "general protection fault"),
                       ("WARNING: possible circular locking dependency detected", "WARNING"),
                       ("BUG: KASAN: slab-use-after-free in f", "BUG"),
                       ("INFO: task sh:77 blocked for more than 120 seconds.", "hung task"),
                       ("kmemleak: 3 new suspected memory leaks", "kmemleak"),
                       ("Oops: 0002 [#1] PREEMPT SMP", "Oops")]:
        assert [r.kind for r in find_reports([text])] == [kind], text
    assert find_reports(["fifolab 0000:01:00.0: probed", "module verification failed"]) == []


def test_watcher_follows_a_growing_file(tmp_path):
    log = tmp_path / "console.log"
    w = KernelLogWatcher(log)
    assert w.poll() == []
    log.write_text("boot\r\nok\n")
    assert w.poll() == []
    with open(log, "a") as f:
        f.write("[ 5.0] Oops: 0000 [#1]\n")
    assert [r.kind for r in w.poll()] == ["Oops"]
    assert w.poll() == []
