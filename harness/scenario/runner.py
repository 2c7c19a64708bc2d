"""Running scenarios: :class:`Runner` boots as few labs as the scenarios' ``lab`` sections
allow, and for each scenario reloads the driver, runs the steps (``steps.py``), judges
(``judge.py``), undoes what the scenario armed and checks that the driver recovered by itself
(the package's docstring says how a run goes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..agent import GuestJob
from ..driver import loop_when_running_sh
from ..kmsg import KernelLogError
from ..lab import Lab, LabError
from .judge import Result, Verdict, cross_check, judge_counters, judge_events
from .spec import LabSpec, Scenario
from .steps import Run, model_stats, replug, run_steps


class Runner:
    """Runs scenarios in as few labs as their configurations allow (package docstring)."""

    def __init__(self, kernel: str = "default", out: Callable[[str], None] = print,
                 image=None):
        self.kernel, self.out, self.image = kernel, out, image
        self.lab: Lab | None = None
        self.lab_spec: LabSpec | None = None
        self.boots: list[float] = []
        self.broken = False         # the last scenario left the lab in a state we cannot undo
        self.unplugged: set[int] = set()    # the lab's devices unplugged and not back yet

    # ---- labs

    def _lab_for(self, sc: Scenario) -> Lab:
        fresh = sc.isolate or sc.lab != self.lab_spec or self.lab is None or self.broken
        if not fresh and not self._usable():
            self.out("  (the lab is unusable: booting a fresh one)")
            fresh = True
        if fresh:
            self.close()
            cfg = sc.lab.config(self.kernel)
            lab = Lab(cfg, self.image)
            try:
                lab.start()
            except BaseException:
                lab.close()
                raise
            self.lab, self.lab_spec, self.broken = lab, sc.lab, False
            assert lab.boot_seconds is not None     # started, not an interactive shell
            self.boots.append(lab.boot_seconds)
            self.unplugged = set()
            self.out(f"booted a lab ({cfg.devices} devices, wired {list(cfg.wired)}, "
                     f"fifo {cfg.fifo_depth}, kernel {cfg.kernel}) in "
                     f"{lab.boot_seconds:.1f} s")
        assert self.lab is not None
        return self.lab

    def _usable(self) -> bool:
        assert self.lab is not None
        try:
            self.lab.check_alive()
            return self.lab.exec("true", timeout=15).returncode == 0
        except (LabError, KernelLogError):
            return False

    def close(self) -> None:
        if self.lab is not None:
            self.lab.close()
        self.lab = self.lab_spec = None

    # ---- scenarios

    def run_all(self, scenarios: list[Scenario], fail_fast: bool = False) -> list[Result]:
        # scenarios sharing a lab configuration run together, isolated ones last
        # and those that unplug a device last in their group (each one spends a lab)
        order = sorted(scenarios, key=lambda s: (s.isolate or s.lab.own,
                                                 [x.lab for x in scenarios].index(s.lab),
                                                 s.unplugs))
        results: list[Result] = []
        try:
            last_file = None
            for sc in order:
                if sc.lab.own and sc.file != last_file:
                    self.close()
                last_file = sc.file
                if fail_fast and results and not results[-1].ok:
                    r = Result(sc, False, 0.0, [], "not run: --fail-fast")
                else:
                    r = self.run_one(sc)
                results.append(r)
                self.out(f"  {'PASS' if r.ok else 'FAIL'}  {r.seconds:6.2f} s  "
                         f"[{sc.path}] {sc.title}")
                if not r.ok:
                    self.out("        " + r.detail.replace("\n", "\n        "))
        finally:
            self.close()
        return results

    def run_one(self, sc: Scenario) -> Result:
        t0 = time.monotonic()
        try:
            lab = self._lab_for(sc)
        except (LabError, KernelLogError) as err:
            return Result(sc, False, time.monotonic() - t0, [], f"could not boot: {err}")
        run = Run(lab, sc, self.unplugged)
        try:
            try:
                self._prepare(lab, sc)
            except (LabError, KernelLogError):
                self.broken = True
                raise
            before = lab.counters(sc.device)
            run.stats0 = {d: model_stats(lab, d) for d in range(sc.lab.devices)}
            lab.model_events()                      # forget what came before
            run_steps(run)
            run.events += lab.model_events(0.05)
            after = lab.counters(sc.device)
            run.events += lab.model_events(0.05)    # what the counters read may stem from
            run.verdicts += self._judge_scenario(lab, sc, before, after, run.events)
        except (LabError, KernelLogError, OSError) as err:      # OSError: the host wire
            run.detail.append(f"{type(err).__name__}: {err}")
            run.verdicts.append(Verdict("run", "completes", "error", False))
        finally:
            try:
                self._cleanup(run)
                run.verdicts += self._integrity(lab, sc)
            except (LabError, KernelLogError) as err:
                run.detail.append(f"after the scenario: {err}")
                run.verdicts.append(Verdict("integrity", "lab recovers", "error", False))
                self.broken = True
        if sc.unplugs:
            # QEMU 7.2 (q35, ACPI hot-plug) removes a device that was plugged back without
            # the guest noticing at its next device_del: never reuse such a lab.
            self.broken = True
        ok = all(v.ok for v in run.verdicts)
        if not ok:
            run.detail.insert(0, "; ".join(f"{v.field}: expected {v.expected}, got {v.got}"
                                           for v in run.verdicts if not v.ok))
            run.detail.insert(0, f"{sc.file}:{sc.line}")
        return Result(sc, ok, time.monotonic() - t0, run.verdicts, "\n".join(run.detail))

    def _prepare(self, lab: Lab, sc: Scenario) -> None:
        """Reload the driver (resets the device, FIFOs, sticky errors and counters) with the
        scenario's module parameters."""
        lab.driver.reload(sc.modparams, devices=range(sc.lab.devices))

    # ---- judging and cleaning up

    def _judge_scenario(self, lab, sc, before, after, events) -> list[Verdict]:
        v = judge_events(sc.expect, events) + judge_counters(sc.expect, before, after)
        if sc.expect.get("fifo_empty"):
            q = lab.model_qmp("query-fifolab", {"device": sc.device})
            lvl = q["fifo"]["rx_level"]
            v.append(Verdict("fifo rx_level", "0", str(lvl), lvl == 0))
        return v + cross_check(sc.device, before, after, events)

    def _cleanup(self, run: Run) -> None:
        """Undo what the scenario armed, so that the driver can recover by itself."""
        lab, sc = run.lab, run.sc
        for w in run.wires.values():
            w.close()
        run.wires.clear()
        if not lab.qmp("query-status")["running"]:
            lab.qmp("cont")
        for d in range(sc.lab.devices):
            lab.model_qmp("fault-clear", {"device": d})
            if lab.model_qmp("query-fifolab", {"device": d})["stalled"]:
                lab.model_qmp("fault-resume", {"device": d})
        for n in sorted(self.unplugged):
            replug(lab, n, 15, self.unplugged)
        for job in run.jobs.values():
            _kill(lab, job)

    def _integrity(self, lab: Lab, sc: Scenario) -> list[Verdict]:
        assert lab.kmsg is not None
        lab.kmsg.check()
        if not sc.integrity:
            return []
        res = lab.exec(loop_when_running_sh(sc.device), timeout=60)
        ok = res.returncode == 0 and "ok 100000" in res.stdout
        return [Verdict("integrity", "fifotest loop ok", "ok" if ok else
                        f"exit {res.returncode}: {(res.stdout + res.stderr).strip()[:200]}",
                        ok)]


def _kill(lab: Lab, job: GuestJob) -> None:
    """End a background command the scenario left running."""
    lab.exec(f"kill -9 {job.pid} 2>/dev/null; true", check_log=False)
    try:
        lab.wait(job, timeout=10, check_log=False)
    except LabError:
        pass
