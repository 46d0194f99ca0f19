"""Imported first by the fork server of :func:`mixflow.parallel.parallel_map`: Ctrl-C ends its workers quietly.

A terminal's Ctrl-C goes to every process of its group, the workers too. Python's own handler would make each
busy or starting worker print a ``KeyboardInterrupt`` traceback before the main process says, in one line,
that it was interrupted. With the operating system's default action a worker simply ends; the main process,
interrupted too, stops the pool and reports. The fork server keeps this handler for the workers it forks
(it ignores Ctrl-C itself only after its preloads); a spawned worker sets it in the pool's initializer.
Nothing else imports this module.
"""

import signal

if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a run started with Ctrl-C ignored keeps ignoring it
    signal.signal(signal.SIGINT, signal.SIG_DFL)
