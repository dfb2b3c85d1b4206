"""Transports behind one Broker interface: RabbitMQ and the in-process memory broker."""

from fedmq.broker.base import Body, Broker, DeadLetter, Delivery
from fedmq.broker.memory import MemoryBroker, MemoryHub
from fedmq.broker.settings import BrokerSettings, open_broker
from fedmq.broker.topology import Topology

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
