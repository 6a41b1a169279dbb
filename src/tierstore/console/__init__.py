"""The web console at ``/console`` (docs/console.md): server-rendered pages that act only through
the server's dispatcher, as the signed-in session's principal."""

from tierstore.console._app import CONSOLE_PATH, PAGES, ConsoleApp, is_console_request

__all__ = ["CONSOLE_PATH", "PAGES", "ConsoleApp", "is_console_request"]
