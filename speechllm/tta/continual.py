"""Continual test-time adaptation: naive continual SUTA and Dynamic-SUTA (arXiv 2406.11064).

Naive continual ("CSUTA"): the same SUTA steps, never reset — errors compound and the model can
collapse (empty or constant transcripts) after a domain shift. Dynamic-SUTA, faithful to
hhhaaahhhaa/Dynamic-SUTA (config/strategy/dsuta.yaml, dynamic-reset.yaml, 5step.yaml):
- a *slow* model, updated every `update_freq` (5) utterances by one AdamW step on the buffer of the
  last `memory` (5) utterances (loss averaged, gradient accumulated);
- a *fast* model per utterance: start from the slow one, `steps` (5) SUTA steps, transcribe. The reference
  code's fast model also starts from the slow model's AdamW state (moments and step count: `fast_optimizer
  "slow"`); the default here, and every published figure, starts it with a fresh AdamW (`"fresh"`);
- dynamic reset: K utterances after each reset, the slow model is snapshotted ("domain") at K/2 and
  the per-utterance loss improvement L(domain) − L(source) is collected over utterances K/2+1..K−1
  (49 for K 100, as the reference's `_build_stat_model`) into a Gaussian fit at K; afterwards, at
  every update, the buffer's mean improvement is z-scored (std / √n); a z > 2 on `patience` (2)
  consecutive checks resets the slow model to the source weights.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass

import numpy as np
import torch

from speechllm.errors import ConfigError
from speechllm.tta.asr import TTAModel
from speechllm.tta.suta import LossFn, Method, ParamAdapter, SUTAConfig, adapt_steps, suta_objective


class ContinualMethod(Method):
    """SUTA steps on every utterance from wherever the last one left the weights (no reset)."""

    name = "continual"

    def __init__(self, asr: TTAModel, cfg: SUTAConfig):
        self.asr, self.cfg = asr, cfg
        self.ad = ParamAdapter(asr, cfg)
        self.objective = suta_objective(cfg)

    def process(self, wav: np.ndarray) -> dict:
        inputs = self.asr.prepare(wav)
        rec = adapt_steps(self.ad, inputs, self.objective, self.cfg.steps)
        return {"hyp": self.asr.transcribe(inputs), "losses": rec["losses"], "skips": rec["skips"]}

    def state(self) -> dict:
        return {"params": self.ad.snapshot(), "opt": self.ad.optimizer_state()}

    def load_state(self, st: dict) -> None:
        self.ad.load(st["params"])
        self.ad.load_optimizer_state(st["opt"])


@dataclass
class ShiftDetector:
    """z-score domain-shift detector over a scalar statistic (Dynamic-SUTA's loss improvement).

    Feed `observe(x)` for the reference window; `fit()` builds the Gaussian; `check(batch)` returns
    True once the batch mean sits more than `z` reduced standard deviations above the mean on
    `patience` consecutive checks.
    """

    z: float = 2.0
    patience: int = 2
    ref: list | None = None
    mu: float | None = None
    std: float | None = None
    fails: int = 0

    def observe(self, x: float) -> None:
        self.ref = (self.ref or []) + [float(x)]

    def fit(self) -> None:
        if self.ref and len(self.ref) >= 2:
            self.mu, self.std = statistics.mean(self.ref), max(statistics.stdev(self.ref), 1e-8)
        self.ref = None

    @property
    def ready(self) -> bool:
        return self.mu is not None

    def deviation(self, batch: list[float]) -> float:
        return (statistics.mean(batch) - self.mu) / (self.std / len(batch) ** 0.5)

    def check(self, batch: list[float]) -> bool:
        if not self.ready or not batch:
            return False
        self.fails = self.fails + 1 if self.deviation(batch) > self.z else 0
        return self.fails >= self.patience

    def reset(self) -> None:
        self.ref, self.mu, self.std, self.fails = None, None, None, 0


@dataclass
class DynamicConfig:
    steps: int = 5  # fast-model SUTA steps per utterance (5step.yaml)
    update_freq: int = 5
    memory: int = 5
    reset: str = "dynamic"  # "dynamic" | "none"
    K: int = 100  # utterances after a reset used to build the detector (paper: 100)
    z: float = 2.0
    patience: int = 2
    slow_lr: float | None = None  # the slow model's step; None = the fast steps' lr (the paper's)
    fast_optimizer: str = "fresh"  # "fresh" AdamW per utterance | "slow": the slow model's state (the reference code's)


class DynamicSUTA(Method):
    """Fast/slow continual SUTA with optional dynamic reset (one model object, parameter swaps).

    `objective` replaces SUTA's loss everywhere (fast steps, slow updates, the detector's losses) and
    `restrict` re-selects the adapted parameters: Dynamic-SUTA on `ln_topk_eos` (`dsuta_ln_topk_eos*`)."""

    def __init__(self, asr: TTAModel, cfg: SUTAConfig, dcfg: DynamicConfig, objective: LossFn | None = None,
                 restrict=None, name: str = "dsuta"):
        if dcfg.reset not in ("dynamic", "none"):
            raise ConfigError(f"reset must be 'dynamic' or 'none', got {dcfg.reset!r}")
        self.asr, self.cfg, self.d = asr, cfg, dcfg
        self.name = name + "_reset" if dcfg.reset == "dynamic" else name
        self.ad = ParamAdapter(asr, cfg)
        if restrict is not None:
            restrict(self.ad)
        self.source = self.ad.snapshot()
        self.slow = self.ad.snapshot()
        self.ad.new_optimizer()
        self.slow_opt = self.ad.optimizer_state()
        self.domain: dict | None = None
        self.buffer: list[np.ndarray] = []
        self.t = 0  # utterances seen
        self.t_reset = 0
        self.resets: list[int] = []
        self.det = ShiftDetector(z=dcfg.z, patience=dcfg.patience)
        self.objective = objective or suta_objective(cfg)

    # -- helpers
    @torch.no_grad()
    def _loss(self, params: dict, wav: np.ndarray) -> float:
        self.ad.load(params)
        loss, _ = self.objective(self.asr, self.asr.prepare(wav))
        return float(loss) if loss is not None else float("nan")

    def _improvements(self, wavs: list[np.ndarray]) -> list[float]:
        """L(domain) − L(source) per utterance: positive = the domain model fits worse than source."""
        out = [self._loss(self.domain, w) - self._loss(self.source, w) for w in wavs]
        return [x for x in out if x == x]

    def _slow_update(self) -> None:
        self.ad.load(self.slow)
        self.ad.new_optimizer()
        self.ad.load_optimizer_state(self.slow_opt)
        if self.d.slow_lr is not None:  # the slow model compounds its steps: it may need a smaller one
            self.ad.set_lr(self.d.slow_lr)
        self.ad.zero_grad()
        n, used = len(self.buffer), 0
        for w in self.buffer:
            loss, _ = self.objective(self.asr, self.asr.prepare(w))
            if loss is not None and torch.isfinite(loss):
                (loss / n).backward()
                used += 1
        if used:  # gradient accumulated over the buffer, one guarded step
            self.ad.step()
        self.slow = self.ad.snapshot()
        self.slow_opt = self.ad.optimizer_state()

    def _maybe_reset(self) -> bool:
        if self.d.reset != "dynamic" or self.domain is None or not self.det.ready:
            return False
        return self.det.check(self._improvements(self.buffer))

    def _build_detector(self, wav: np.ndarray) -> None:
        k2 = self.t_reset + self.d.K // 2
        if self.t == k2:
            self.domain = {k: v.clone() for k, v in self.slow.items()}
        # the reference's window (dsuta_reset.py `_build_stat_model`): K/2 and K themselves are not in it
        elif k2 < self.t < self.t_reset + self.d.K and self.domain is not None and not self.det.ready:
            for x in self._improvements([wav]):
                self.det.observe(x)
        if self.t == self.t_reset + self.d.K and not self.det.ready:
            self.det.fit()

    # -- one utterance
    def process(self, wav: np.ndarray) -> dict:
        inputs = self.asr.prepare(wav)
        self.ad.load(self.slow)  # fast model starts from the slow one
        self.ad.new_optimizer()
        if self.d.fast_optimizer == "slow":  # a copy: loading keeps the tensors, and the fast steps would move them
            self.ad.load_optimizer_state(copy.deepcopy(self.slow_opt))
            self.ad.set_lr(self.ad.cfg.lr)  # the fast steps' own lr (--slow-lr may differ)
        rec = adapt_steps(self.ad, inputs, self.objective, self.d.steps)
        hyp = self.asr.transcribe(inputs)
        reset = False
        self.buffer = (self.buffer + [wav])[-self.d.memory:]
        self.t += 1
        if self.t % self.d.update_freq == 0:
            if self._maybe_reset():
                reset = True
                self.resets.append(self.t)
                self.slow = {k: v.clone() for k, v in self.source.items()}
                self.ad.new_optimizer()
                self.slow_opt = self.ad.optimizer_state()
                self.domain, self.t_reset = None, self.t
                self.det.reset()
            else:
                self._slow_update()
            self.buffer = []
        if self.d.reset == "dynamic":
            self._build_detector(wav)
        self.ad.load(self.slow)
        return {"hyp": hyp, "losses": rec["losses"], "skips": rec["skips"], "reset": reset}

    # -- resume
    def state(self) -> dict:
        return {"slow": self.slow, "slow_opt": self.slow_opt, "domain": self.domain,
                "buffer": [torch.from_numpy(np.asarray(w)) for w in self.buffer], "t": self.t,
                "t_reset": self.t_reset, "resets": self.resets,
                "det": {"ref": self.det.ref, "mu": self.det.mu, "std": self.det.std, "fails": self.det.fails}}

    def load_state(self, st: dict) -> None:
        self.slow, self.slow_opt, self.domain = st["slow"], st["slow_opt"], st["domain"]
        self.buffer = [b.numpy() for b in st["buffer"]]
        self.t, self.t_reset, self.resets = st["t"], st["t_reset"], list(st["resets"])
        for k, v in st["det"].items():
            setattr(self.det, k, v)
        self.ad.load(self.slow)
