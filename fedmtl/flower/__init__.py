"""fedmtl on Flower 1.42: a ServerApp that drives rounds on the Grid with the engine's ServerState, and a
ClientApp that trains one client with its personal layers kept on its node."""

from fedmtl.flower.client import ClientRuntime, client_app, make_client_app
from fedmtl.flower.codec import client_schedules, decode_params, decode_schedules, encode_params, encode_schedules
from fedmtl.flower.exchange import Exchange, exchange
from fedmtl.flower.factory import FACTORY_GROUP, FACTORY_KEY, FlowerSetup, factory_names, load_factory, toy_federation
from fedmtl.flower.personal import load_personal, save_personal
from fedmtl.flower.server import ClientInfo, FlowerServer, RunSettings, check_update, make_server_app, server_app

__all__ = [
    "ClientRuntime", "client_app", "make_client_app", "client_schedules", "decode_params", "decode_schedules",
    "encode_params", "encode_schedules", "Exchange", "exchange", "FACTORY_GROUP", "FACTORY_KEY", "FlowerSetup",
    "factory_names", "load_factory",
    "toy_federation", "load_personal", "save_personal", "ClientInfo", "FlowerServer", "RunSettings",
    "check_update", "make_server_app", "server_app",
]
