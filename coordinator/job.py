"""The round loop of a federated training run.

Each round: draw the round's workers, send each the global model with the strategy's settings,
collect the replies (streaming each update into the strategy), aggregate, evaluate, log one JSON
line, checkpoint. Deterministic given the
seed, so a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import replace

import torch

from fedmq.broker.base import Broker
from fedmq.coordinator.aggregation import weighted_mean
from fedmq.coordinator.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedmq.coordinator.evaluation import Evaluator
from fedmq.coordinator.metrics import MetricsLog, RoundMetrics
from fedmq.coordinator.proxy import send_shared, wait_for_workers
from fedmq.coordinator.presence import announce
from fedmq.coordinator.privacy.build import private_strategy
from fedmq.coordinator.rounds import Collected, ReplyCollector
from fedmq.coordinator.secagg.aggregate import SecureAggregation, Trained
from fedmq.coordinator.sampling import sample
from fedmq.coordinator.screening import streamed_update_error, update_error
from fedmq.coordinator.settings import TrainSettings
from fedmq.coordinator.strategies import build_strategy
from fedmq.coordinator.strategy import Failure, Strategy, StrategyMetrics
from fedmq.protocol.errors import BrokerError, PublishRejected, TrainingFailed
from fedmq.protocol.messages import Reply, Weights
from fedmq.protocol.stream import StreamedReply
from fedmq.protocol.presence import JobState
from fedmq.worker.task import Task, load_task

log = logging.getLogger("fedmq.coordinator")
OnRound = Callable[[RoundMetrics], None]


def round_seed(seed: int, round_: int, worker: str) -> int:
    """Each worker's shuffling seed for a round: fixed by the run's seed, different per worker."""
    return zlib.crc32(f"{seed}:{round_}:{worker}".encode()) ^ seed


class TrainingJob:
    def __init__(self, broker: Broker, settings: TrainSettings, *, task: Task | None = None,
                 strategy: Strategy | None = None, on_round: OnRound | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.task = task or load_task(settings.task)
        # With --dp-noise-multiplier the strategy is wrapped in DP-FedAvg (coordinator.privacy).
        self.strategy = private_strategy(strategy or build_strategy(settings.strategy, dict(settings.strategy_options)),
                                         settings)
        check_replies(settings, self.strategy)
        # With --secure-aggregation the workers hold their updates and the round unmasks their sum.
        self.secure = (SecureAggregation(settings.secagg, clip=settings.clip_norm, strategy=self.strategy)
                       if settings.secagg is not None and settings.clip_norm is not None else None)
        self.on_round = on_round
        self.evaluator = Evaluator(broker, self.task, settings)
        self._metrics = MetricsLog(settings.metrics_out) if settings.metrics_out else None
        self._completed = 0  # the last round completed, this run or before a --resume

    def run(self) -> Weights:
        """Train for the configured rounds; the final global weights. TrainingFailed if a round fails."""
        s = self.settings
        try:
            return self._run()
        except BaseException as e:
            # A crashed run must not show as running in `fedmq status`: its last beat says failed.
            # Not after a lost broker: the beat would only wait out the reconnect window again.
            if not isinstance(e, BrokerError) or isinstance(e, PublishRejected):
                announce(self.broker, s.job, s.task, self._completed, s.rounds, JobState.FAILED)
            raise

    def _run(self) -> Weights:
        first_round, weights = self._starting_point()
        self._completed = first_round - 1
        if self._metrics:  # lines of rounds after the checkpoint's are rerun: drop them first
            self._metrics.start(after_round=self._completed)
        names = list(self.settings.workers)
        self.broker.declare_job(self.settings.job, names)
        self.broker.consume_replies(self.settings.job, names)
        self._wait_for_workers()
        s = self.settings
        announce(self.broker, s.job, s.task, self._completed, s.rounds, JobState.RUNNING)
        for round_ in range(first_round, self.settings.rounds + 1):
            if (reason := self.strategy.stop_reason(round_)) is not None:
                self._stop(reason)
                break
            weights = self._round(round_, weights)
            state = JobState.RUNNING if round_ < s.rounds else JobState.DONE
            announce(self.broker, s.job, s.task, round_, s.rounds, state)
        # Done: late replies now find no queue and are dropped by their workers. After a failure
        # the queues stay, so a --resume finds what arrived meanwhile.
        self.broker.delete_job(self.settings.job, names)
        return weights

    def _stop(self, reason: str) -> None:
        """End the run before its planned rounds, as a finished one ends: logged, a last JSON line."""
        s = self.settings
        log.warning("job %s stops after round %d of %d: %s", s.job, self._completed, s.rounds, reason)
        if self._metrics:
            self._metrics.write_stop(job=s.job, after_round=self._completed, reason=reason)
        announce(self.broker, s.job, s.task, self._completed, s.rounds, JobState.DONE)

    def _starting_point(self) -> tuple[int, Weights]:
        s = self.settings
        if s.resume and s.checkpoint_dir and (checkpoint := load_checkpoint(s.checkpoint_dir)):
            if (checkpoint.task, checkpoint.seed) != (s.task, s.config.seed):
                raise TrainingFailed(f"the checkpoint in {s.checkpoint_dir} is of task {checkpoint.task!r} "
                                     f"seed {checkpoint.seed}; resume with those or use another --checkpoint-dir")
            self.strategy.load_state_dict(checkpoint.strategy_state)
            log.info("resuming job %s after round %d", s.job, checkpoint.round)
            return checkpoint.round + 1, checkpoint.weights
        torch.manual_seed(s.config.seed)  # the initial model is a function of the seed
        # No clone: the tensors outlive the throwaway module, and rounds never write into them.
        return 1, {k: v.detach() for k, v in self.task.build_model().state_dict().items()}

    def _wait_for_workers(self) -> None:
        wait_for_workers(self.broker, self.settings.workers, self.settings.wait_for_workers_s)

    def _round(self, round_: int, weights: Weights) -> Weights:
        s = self.settings
        started = time.perf_counter()
        self.strategy.begin_round(weights)
        deadline = time.monotonic() + s.round_timeout_s
        sampled = sample(s.workers, s.asked_per_round, seed=s.config.seed, round_=round_)
        asked, failures = self._send_train(round_, weights, deadline, sampled)
        collector = ReplyCollector(self.broker, s.job, round_, asked, verify_senders=s.verify_senders)
        # Linear strategies fold each update straight from its received parts (issue 10.5).
        streamed = self._stream_folder(weights) if self.strategy.streams and not self.secure else None
        folder = self.secure.held if self.secure else self._folder(weights)
        collected = collector.collect(deadline, folder, streamed)
        collected.failures[:0] = failures
        if len(collected.replies) < s.needed_replies:
            raise TrainingFailed(_shortfall(round_, s.needed_replies, collected))
        secured = self._aggregate_securely(round_, weights, collected) if self.secure else {}
        new_weights = self.strategy.end_round(collected.failures)
        wall_s = time.perf_counter() - started
        evaluation = self.evaluator.evaluate(round_, new_weights)
        metrics = RoundMetrics(
            job=s.job, round=round_, wall_s=wall_s,
            worker_train_s=max((r.metrics.get("train_seconds", 0.0) for r in collected.replies), default=0.0),
            replies=len(collected.replies), failed=len(collected.failures), dropped=collected.dropped,
            train_loss=weighted_mean([(r.metrics["train_loss"], r.num_examples)
                                      for r in collected.replies if "train_loss" in r.metrics]),
            eval_loss=evaluation.loss, eval_accuracy=evaluation.accuracy, eval_s=evaluation.seconds,
            failures={f.worker: f.reason for f in collected.failures},
            rejected=collected.rejected, dead_lettered=collected.dead_lettered,
            asked=sampled, strategy={**self.strategy.metrics(), **secured})
        self._finish(metrics, new_weights)
        return new_weights

    def _aggregate_securely(self, round_: int, weights: Weights, collected: Collected) -> StrategyMetrics:
        """Unmask the sum of the held updates of the workers that trained into the strategy; the
        round's secure-aggregation metrics. Dropouts join the round's failures."""
        assert self.secure is not None
        trained = [Trained(worker=a.worker, num_examples=a.num_examples) for a in collected.replies]
        outcome = self.secure.aggregate(self.broker, job=self.settings.job, round_=round_, weights=weights,
                                        trained=trained, verify_senders=self.settings.verify_senders)
        collected.failures.extend(outcome.failures)
        left = {f.worker for f in outcome.failures}  # trained, then dropped out: failed, not replied
        collected.replies[:] = [a for a in collected.replies if a.worker not in left]
        collected.dropped += outcome.dropped
        collected.dead_lettered += outcome.dead_lettered
        return outcome.metrics

    def _send_train(self, round_: int, weights: Weights, deadline: float,
                    sampled: list[str]) -> tuple[dict[str, str], list[Failure]]:
        """Send each sampled worker its task, configured by the strategy; each expires at the deadline."""
        c = self.settings.config
        base = {name: replace(c, seed=round_seed(c.seed, round_, name)) for name in sampled}
        configs = self.strategy.configure_train(round_, base)
        if self.secure:
            configs = self.secure.configure(configs)
        # The model goes out once for all of them; a worker that cannot get it (no queue, a
        # refusal) is that worker's failure, not the run's.
        ordered = {name: configs[name] for name in self.settings.workers if name in configs}
        sent = send_shared(self.broker, self.settings.job, round_, weights, ordered,
                           max(deadline - time.monotonic(), 0.001))
        return sent.asked, [Failure(worker, reason) for worker, reason in sent.failed.items()]

    def _folder(self, weights: Weights) -> Callable[[Reply], str | None]:
        def fold(reply: Reply) -> str | None:
            error = update_error(weights, reply.update, self.settings.max_update_norm)
            if error is None:
                self.strategy.accumulate(reply)
            return error
        return fold

    def _stream_folder(self, weights: Weights) -> Callable[[StreamedReply], str | None]:
        def fold(reply: StreamedReply) -> str | None:
            # Screened in full before any of it is folded: a rejected update never touches the sum.
            error = streamed_update_error(weights, reply.update, self.settings.max_update_norm)
            if error is None:
                self.strategy.accumulate_streamed(reply)
            return error
        return fold

    def _finish(self, metrics: RoundMetrics, weights: Weights) -> None:
        # The line is durable before the checkpoint: a kill between the two leaves a line that the
        # --resume drops (MetricsLog.start) and the rerun round writes again, never a missing one.
        s = self.settings
        if self._metrics:
            self._metrics.write(metrics)
        if s.checkpoint_dir:
            save_checkpoint(s.checkpoint_dir, Checkpoint(s.job, s.task, s.config.seed, metrics.round,
                                                         weights, self.strategy.state_dict()))
        self._completed = metrics.round
        if self.on_round:
            self.on_round(metrics)


def check_replies(settings: TrainSettings, strategy: Strategy) -> None:
    """ValueError before round 1 when a round may close with fewer replies than the strategy needs."""
    needs = strategy.min_replies()
    if settings.needed_replies < needs:
        raise ValueError(f"strategy {settings.strategy!r} needs at least {needs} replies a round, but rounds may "
                         f"close with {settings.needed_replies}: raise --min-replies (or --sample), or lower "
                         f"the strategy's f")


def _shortfall(round_: int, needed: int, collected: Collected) -> str:
    got = len(collected.replies)
    parts = [f"round {round_} got {got} usable replies of the {needed} needed"]
    if collected.silent:
        parts.append(f"silent: {', '.join(collected.silent)}")
    if collected.failures:
        parts.append("failed: " + "; ".join(f"{f.worker}: {f.reason}" for f in collected.failures))
    return " — ".join(parts) + ". Check those workers, or lower --min-replies / raise --round-timeout."
