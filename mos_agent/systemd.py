"""sd_notify to systemd (READY, STOPPING, RELOADING, WATCHDOG, STATUS) through the sdnotify
package; a no-op outside systemd."""

from __future__ import annotations

import os

import sdnotify


class SystemdNotifier:
    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        if self._notifier is not None and self._notifier.socket is not None:
            # Sent from the event loop: a reader that stops reading must not block the agent
            # (a full datagram queue drops the message instead).
            self._notifier.socket.setblocking(False)

    def notify(self, *assignments: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(assignments))

    @staticmethod
    def watchdog_interval() -> float | None:
        """The watchdog period in seconds when systemd asks this process for pings."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6
        except ValueError:
            return None
