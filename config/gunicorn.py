"""Gunicorn's sync worker, sending each response in one TCP segment (experiment)."""

import socket

from gunicorn.workers import sync


class SyncWorker(sync.SyncWorker):
    def handle(self, listener, client, addr):
        if hasattr(socket, "TCP_CORK"):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        super().handle(listener, client, addr)
