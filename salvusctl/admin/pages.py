"""The admin's Klein application: server-rendered pages, C{/RPC2} and C{/metrics}."""

from __future__ import annotations

from klein import Klein

from salvusctl.admin.rpc import RPCRoot
from salvusctl.admin.state import AdminState

__all__ = ["AdminPages"]


class AdminPages:
    """Routes over one host's services (the state is injected; Klein is a class attribute)."""

    app = Klein()

    def __init__(self, state: AdminState):
        self.state = state
        self.rpc = RPCRoot(state)

    def resource(self):
        return self.app.resource()

    @app.route("/RPC2", branch=False)
    def rpc2(self, request):
        return self.rpc
