"""Entry points for `flwr run`: fedmtl's ServerApp and ClientApp (kept light: the work is in fedmtl.flower)."""

from fedmtl.flower import client_app, server_app

__all__ = ["client_app", "server_app"]
