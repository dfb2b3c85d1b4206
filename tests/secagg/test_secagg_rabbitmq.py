"""Secure aggregation over a real RabbitMQ: `fedmq train --secure-aggregation` with `fedmq worker`
processes, alone and with distributed DP noise; a forged stage reply on a provisioned broker; and
a coordinator that asks one real worker for both shares of a peer.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from fedmq.broker.base import Body, Broker
from fedmq.broker.rabbitmq import RabbitBroker
from fedmq.broker.settings import BrokerSettings
from fedmq.coordinator.checkpoint import load_checkpoint
from fedmq.coordinator.cli import main
from fedmq.coordinator.job import TrainingJob
from fedmq.coordinator.metrics import RoundMetrics, read_metrics
from fedmq.coordinator.privacy.accountant import epsilon_for
from fedmq.coordinator.secagg.round import SecAggRound
from fedmq.coordinator.secagg.settings import SecAggSettings
from fedmq.coordinator.settings import TrainSettings
from fedmq.protocol.errors import BrokerError
from fedmq.protocol.messages import (
    ErrorReply,
    Message,
    Option,
    Reply,
    TrainConfig,
    TrainTask,
    Weights,
    decode_message,
    encode_message,
)
from fedmq.protocol.secagg import masking
from fedmq.protocol.secagg import messages as m
from fedmq.protocol.secagg.params import SecAggParams
from fedmq.worker.secagg.session import WorkerSession
from fedmq.worker.task import load_task
from tests.broker.live_worker import WAIT_S, live_worker, toy_weights
from tests.coordinator.conftest import StartWorkers, broker_args
from tests.coordinator.test_federation_senders_rabbitmq import serving
from tests.security.conftest import (
    Federation,
    federation,  # noqa: F401 - the provisioned broker fixture
)

pytestmark = pytest.mark.rabbitmq
SEED = 4
CLIP = 10.0  # far above a digits update at lr 0.1: only the quantization separates the runs


def _start(start_workers: StartWorkers, settings: BrokerSettings, names: list[str]) -> None:
    start_workers("digits", names)
    with RabbitBroker(settings) as broker:
        deadline = time.monotonic() + 180  # torch imports on two busy cores
        while not all(broker.has_worker(w) for w in names) and time.monotonic() < deadline:
            time.sleep(0.5)


def _train(settings: BrokerSettings, names: list[str], out: Path, job: str, *flags: str) -> tuple[int, Weights]:
    """`fedmq train` on digits for two rounds; the exit code and the final model (its checkpoint)."""
    code = main(["train", *broker_args(settings), "--task", "digits", "--workers", ",".join(names),
                 "--rounds", "2", "--lr", "0.1", "--batch-size", "16", "--seed", str(SEED), "--job", job,
                 "--metrics-out", str(out / f"{job}.jsonl"), "--checkpoint-dir", str(out / job), *flags])
    checkpoint = load_checkpoint(out / job)
    assert checkpoint is not None and checkpoint.round == 2, f"{job}: exit {code}, no final checkpoint"
    return code, checkpoint.weights


def test_secure_training_through_rabbitmq_ends_where_plain_fedavg_ends(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given four digits worker processes on the broker
    names = [f"sa{i}" for i in range(4)]
    _start(start_workers, rabbit_settings, names)
    # When the same two rounds run plainly and with secure aggregation (16 bits, C = 10)
    plain_code, plain = _train(rabbit_settings, names, tmp_path, "plain")
    secure_code, secure = _train(rabbit_settings, names, tmp_path, "secure", "--secure-aggregation",
                                 "--clip", str(CLIP), "--quant-bits", "16")
    # Then both exit 0 and the models agree within the quantization error of two rounds
    assert plain_code == secure_code == 0
    step = CLIP / (2 ** 15 - 1)  # one quantization level of one coordinate
    floating = [name for name, t in plain.items() if t.is_floating_point()]
    assert floating
    for name in floating:
        torch.testing.assert_close(secure[name], plain[name], atol=4 * step, rtol=0)
    # And every round of the secure run unmasked the sum of all four
    lines = read_metrics(tmp_path / "secure.jsonl")
    assert [(line["replies"], line["strategy"]["secagg_contributors"]) for line in lines] == [(4, 4), (4, 4)]  # type: ignore[index]
    plain_lines = read_metrics(tmp_path / "plain.jsonl")
    assert lines[-1]["eval_accuracy"] == pytest.approx(plain_lines[-1]["eval_accuracy"], abs=0.01)


def test_secure_training_with_distributed_dp_noise_through_rabbitmq(
        rabbit_settings: BrokerSettings, start_workers: StartWorkers, tmp_path: Path) -> None:
    # Given three digits worker processes on the broker
    names = [f"sd{i}" for i in range(3)]
    _start(start_workers, rabbit_settings, names)
    # When two rounds run with secure aggregation and DP-FedAvg, Z = 1, C = 0.1
    z, clip, m_ = 1.0, 0.1, len(names)
    code, final = _train(rabbit_settings, names, tmp_path, "dpsecure", "--secure-aggregation", "--clip", str(clip),
                         "--dp-noise-multiplier", str(z))
    # Then it exits 0; every line carries the accountant's epsilon for q = 1, accounted with the
    # shares other than the protected worker's own: z sqrt((3 - 1) / 3)
    assert code == 0
    lines = read_metrics(tmp_path / "dpsecure.jsonl")
    for round_, line in enumerate(lines, start=1):
        metrics = line["strategy"]
        assert isinstance(metrics, dict)
        assert metrics["secagg_contributors"] == metrics["dp_contributors"] == m_
        assert metrics["dp_epsilon"] == pytest.approx(epsilon_for(1.0, z * math.sqrt(2 / 3), round_, 1e-5), abs=1e-6)
        assert metrics["dp_noise_std"] == pytest.approx(z * clip)
    # And the noise in the model is the workers' shares, whole: the coordinator adds none in this
    # mode, yet the model moved by N(0, (Z C / m)^2) per coordinate and round, next to which the
    # clipped updates (L2 norm at most C a round) are small
    torch.manual_seed(SEED)
    initial = load_task("digits").build_model().state_dict()
    moved = torch.cat([(final[n] - t).reshape(-1).double() for n, t in initial.items() if t.is_floating_point()])
    expected = z * clip / m_ * math.sqrt(2)
    rms = float(moved.pow(2).mean().sqrt())
    assert expected * 0.9 < rms < expected * 1.1, (rms, expected)


class ForgingBroker(RabbitBroker):
    """The coordinator's broker; when it sends the first ADVERTISE request, `forge` runs once."""

    forge: Callable[[], None] | None = None

    def publish_shared_task(self, workers: Sequence[str], body: Body,
                            expires_in_s: float | None = None) -> dict[str, BrokerError]:
        failed = super().publish_shared_task(workers, body, expires_in_s)
        if self.forge is not None and isinstance(decode_message(bytes(body)), m.AdvertiseRequest):
            forge, self.forge = self.forge, None
            forge()
        return failed


def test_a_stage_reply_published_into_another_workers_queue_is_dead_lettered(
        federation: Federation, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    alice, bob = federation.alice, federation.bob
    job = f"sa-{uuid.uuid4().hex[:6]}"
    rounds: list[RoundMetrics] = []
    settings = TrainSettings("toy", (alice.user, bob.user), rounds=1, job=job, verify_senders=True, clip_norm=CLIP,
                             config=TrainConfig(lr=0.1, seed=SEED), secagg=SecAggSettings(stage_timeout_s=WAIT_S))
    # Given alice and bob, each logged in as itself, and a coordinator that verifies senders
    coordinator = ForgingBroker(federation.settings(federation.coordinator))
    with serving(federation, alice, bob) as threads, RabbitBroker(federation.settings(alice)) as forger, coordinator:
        # When, as the secure round starts, alice publishes an ADVERTISE reply as bob (index 1)
        # into bob's reply queue
        keys = m.PublicKeys(c_public=bytes(32), s_public=bytes(range(32)))
        forged = m.AdvertiseReply(job=job, round=1, sender=1, keys=keys)
        coordinator.forge = lambda: forger.publish_reply(job, bob.user, encode_message(forged))
        with caplog.at_level(logging.WARNING, logger="fedmq.coordinator"):
            TrainingJob(coordinator, settings, on_round=rounds.append).run()
        assert all(thread.is_alive() for thread in threads)
    # Then the forgery was dead-lettered for its user_id, and the round completed with both workers
    assert coordinator.forge is None, "the forgery was never sent"
    assert f"user {alice.user!r} published into worker {bob.user!r}'s reply queue" in caplog.text
    assert rounds[0].dead_lettered == 1 and rounds[0].strategy["secagg_contributors"] == 2


def _ask(coordinator: Broker, worker: str, request: m.Request | TrainTask) -> Message:
    """Send one task or stage request to the live worker; its answer, decoded (and acked)."""
    coordinator.publish_task(worker, encode_message(request), WAIT_S)
    delivery = coordinator.receive(timeout=WAIT_S)
    assert delivery is not None, f"no answer to the {type(request).__name__}"
    coordinator.ack(delivery)
    return decode_message(delivery.body())


def test_a_real_worker_refuses_to_reveal_both_shares_of_one_peer(rabbit_settings: BrokerSettings) -> None:
    job, live = "both-shares", "live0"
    weights = toy_weights()
    with live_worker(rabbit_settings, live) as worker, RabbitBroker(rabbit_settings) as coordinator:
        coordinator.declare_job(job, [live])
        coordinator.consume_replies(job, [live])
        # Given a real toy worker that trained round 1 of a secure job and holds its update
        options: dict[str, Option] = {"secure_aggregation": True, "clip_norm": CLIP}
        task = TrainTask(job=job, round=1, task_id="t1", weights=weights, config=TrainConfig(options=options))
        trained = _ask(coordinator, live, task)
        assert isinstance(trained, Reply) and not trained.update
        # and three peers played in this process, the coordinator by hand (index 0 is the live worker)
        peers = {f"p{i}": WorkerSession(job=job, round_=1, name=f"p{i}", num_examples=3,
                                        update={k: torch.full_like(v, 0.01 * i) for k, v in weights.items()})
                 for i in (1, 2, 3)}
        params = SecAggParams(num_workers=4, threshold=3, neighbours=3, clip=CLIP,
                              max_examples=max(trained.num_examples, 3))
        secure = SecAggRound(job=job, round_=1, params=params, roster=[live, *peers],
                             layout=masking.layout_of(weights))
        requests = secure.start()
        for _ in range(3):  # ADVERTISE, SHARE, MASKED_INPUT: everyone answers
            for name, request in requests.items():
                reply = _ask(coordinator, live, request) if name == live else peers[name].handle(request)
                assert not isinstance(reply, ErrorReply), reply
                secure.receive(reply, sender=name)  # type: ignore[arg-type]
            requests = secure.advance()
        # When the live worker reveals p1's seed share (p1 survived), as the round asks
        first = _ask(coordinator, live, requests[live])
        assert isinstance(first, m.UnmaskReply) and 1 in first.seed_shares
        # and a second request then claims p1 dropped, asking for its key share too
        second = _ask(coordinator, live, m.UnmaskRequest(job=job, round=1, survivors=(0, 2, 3), dropped=(1,)))
        # Then the worker answers with an ErrorReply naming the refusal, and serves on
        assert isinstance(second, ErrorReply) and second.task_id == "secagg-unmask"
        assert "both shares of one worker" in second.reason
        assert worker.alive()
