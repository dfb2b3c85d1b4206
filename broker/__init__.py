"""Transports behind one Broker interface: RabbitMQ and the in-process memory broker."""

from broker.base import Body, Broker, DeadLetter, Delivery
from broker.memory import MemoryBroker, MemoryHub
from broker.settings import BrokerSettings, open_broker
from broker.topology import Topology

__all__ = [
    "Body",
    "Broker",
    "BrokerSettings",
    "DeadLetter",
    "Delivery",
    "MemoryBroker",
    "MemoryHub",
    "Topology",
    "open_broker",
]
