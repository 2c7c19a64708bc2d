"""fifolab's harness: boots the lab over QMP, runs guest commands, watches the kernel log."""
