"""The device model's errors: one hierarchy.

::

    FifolabError                 anything the model reports on purpose
     +-- DmaRangeError           a guest-physical range is not wholly inside one RAM region;
     |                           the device core turns it into ST_DMA_ERROR, never lets it out
     +-- ConfigError             bad command line or environment: a missing or short RAM file,
     |                           a bad size; the CLI prints it without a traceback
     +-- TransportError          the ivshmem server (or the QMP monitor) could not do its job
     |    +-- SocketInUseError   the socket path is taken by a live server or a non-socket
     +-- FaultError              a fault cannot be armed or cleared as asked (bad parameters,
     |                           unknown id, a wire fault on a loopback device)
     +-- CommandError            a QMP command failed: carries QEMU's error class
                                 (GenericError, CommandNotFound, DeviceNotFound); the monitor
                                 turns it into an ``error`` reply, never a disconnect

Wrappers keep the root cause (``raise ... from err``).
"""

from __future__ import annotations


class FifolabError(Exception):
    """Root of every error the model raises on purpose."""


class DmaRangeError(FifolabError):
    """A guest-physical range ``[gpa, gpa + length)`` is not wholly inside one RAM region."""

    def __init__(self, gpa: int, length: int) -> None:
        super().__init__(f"DMA range 0x{gpa:x}+0x{length:x} is outside guest RAM")
        self.gpa = gpa
        self.length = length


class ConfigError(FifolabError):
    """The command line or the environment cannot work (missing file, bad size...)."""


class TransportError(FifolabError):
    """The ivshmem transport failed."""


class SocketInUseError(TransportError):
    """The socket path is served by someone else, or is not a socket."""


class FaultError(FifolabError):
    """A fault cannot be armed or cleared as asked."""


class CommandError(FifolabError):
    """A QMP command failed; ``error_class`` is QEMU's error class for the reply."""

    def __init__(self, desc: str, error_class: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class
