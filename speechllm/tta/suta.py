"""SUTA (Lin et al., arXiv 2203.14222): single-utterance test-time adaptation, and the SDPL baseline.

Faithful to the public code (DanielLin94144/Test-time-adaptation-ASR-SUTA, scripts/LS.sh):
10 AdamW steps (lr 2e-5, weight decay 0), loss = α·entropy + (1−α)·MCC with α = 0.3, logits / 2.5,
entropy averaged over non-blank positions, MCC with entropy re-weighting (`--reweight`), updated
parameters = LayerNorms + convolutional feature extractor, model in eval mode, episodic reset.
The reference code lists the feature extractor in several parameter groups (its module walk visits
each parent module), which multiplies its step; `feature_repeat` > 1 emulates that (off by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from speechllm.errors import ConfigError
from speechllm.tta.asr import Scores, TTAModel


@dataclass
class SUTAConfig:
    steps: int = 10
    lr: float = 2e-5
    em_coef: float = 0.3  # α: weight of entropy; (1 − α) goes to minimum class confusion
    temp: float = 2.5
    non_blank: bool = True
    reweight: bool = True
    train_ln: bool = True
    train_feature: bool = True
    feature_repeat: int = 1  # reference-code quirk: feature params stepped this many times per step
    weight_decay: float = 0.0
    class_num: int | None = None  # MCC normaliser; None = vocabulary size (the reference's 32 for wav2vec2)


# ------------------------------------------------------------------------------------------ losses
def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N, V) -> (N,) entropy of softmax(logits)."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def mcc_loss(logits: torch.Tensor, reweight: bool = True, class_num: int | None = None) -> torch.Tensor:
    """Minimum class confusion on (N, V) logits, as the reference but in O(N·V) memory.

    Reference: C = Pᵀ diag(w) P (V×V), C /= C.sum(1) (broadcast over columns), loss = (ΣC − tr C)/K.
    C is symmetric, so every normalised column sums to 1: ΣC = V and
    tr C = Σ_j (Σ_t w_t p_tj²) / (Σ_t w_t p_tj). A 51k-token Whisper vocabulary never builds V×V.
    """
    p = logits.softmax(-1)  # (N, V)
    n, v = p.shape
    if reweight:
        h = softmax_entropy(logits).detach()
        w = 1 + torch.exp(-h)
        w = n * w / w.sum()
    else:
        w = torch.ones(n, dtype=p.dtype, device=p.device)
    col = (w[:, None] * p).sum(0)  # (V,)  = row/column sums of C
    diag = (w[:, None] * p * p).sum(0)  # (V,)
    trace = (diag / col.clamp_min(torch.finfo(p.dtype).tiny)).sum()
    return (v - trace) / (class_num or v)


def suta_loss(scores: Scores, cfg: SUTAConfig) -> tuple[torch.Tensor | None, dict]:
    """α·H(non-blank, /T) + (1−α)·MCC(/T). Returns (None, info) when the output is degenerate
    (no non-blank position: nothing to adapt, and the reference would divide by zero)."""
    x = scores.logits / cfg.temp
    info: dict = {}
    loss = x.new_zeros(())
    if cfg.em_coef > 0:
        ent = softmax_entropy(x)
        if cfg.non_blank:
            if not bool(scores.mask.any()):
                return None, {"skipped": "all_blank"}
            ent = ent[scores.mask]
        e = ent.mean()
        info["entropy"] = float(e.detach())
        loss = loss + cfg.em_coef * e
    if 1 - cfg.em_coef > 0:
        c = mcc_loss(x, cfg.reweight, cfg.class_num)
        info["mcc"] = float(c.detach())
        loss = loss + (1 - cfg.em_coef) * c
    info["loss"] = float(loss.detach())
    return loss, info


# ---------------------------------------------------------------------------------------- adapter
def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True if no tensor holds a NaN or an infinity. One fused L2 norm (it overflows only past ~1e19 an
    element, which counts as non-finite too): per-tensor `isfinite` cost SGEM 60 ms a step on 20 M weights."""
    with torch.no_grad():
        return bool(torch.nn.utils.get_total_norm(tensors, 2.0).isfinite()) if tensors else True


class ParamAdapter:
    """The adapted parameter set of one model: freezes the rest, snapshots/restores, takes guarded
    AdamW steps. Snapshots cover only the chosen parameters (everything else never changes)."""

    def __init__(self, asr: TTAModel, cfg: SUTAConfig):
        self.asr, self.cfg = asr, cfg
        ln, feat = asr.param_groups()
        self.ln = ln if cfg.train_ln else []
        self.feat = feat if cfg.train_feature else []
        asr.model.requires_grad_(False)
        asr.model.eval()  # no dropout, frozen statistics: the reference's configure_model
        for _, p in self.ln + self.feat:
            p.requires_grad_(True)
        self.named = dict(self.ln + self.feat)
        self._before: dict[str, torch.Tensor] | None = None  # the weights before the last step (NaN rollback)
        self._opt_before: dict = {}  # and the optimizers' state (parameter -> AdamW moments, step count)
        if not self.named:
            raise ConfigError("SUTA: no parameters selected (train_ln and train_feature both off)")
        self.new_optimizer()

    def _feat_lr(self) -> float:
        """The feature extractor's lr: the config's `conv_lr` where it has one (Whisper methods), else `lr`."""
        conv_lr = getattr(self.cfg, "conv_lr", None)
        return self.cfg.lr if conv_lr is None else conv_lr

    def new_optimizer(self) -> None:
        mk = lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=self.cfg.weight_decay)  # noqa: E731
        self.opt_ln = mk([p for _, p in self.ln], self.cfg.lr) if self.ln else None
        self.opt_feat = mk([p for _, p in self.feat], self._feat_lr()) if self.feat else None

    def set_lr(self, lr: float) -> None:
        """Every group to `lr`; a conv front end with its own lr keeps its ratio to the LayerNorms'."""
        ratio = self._feat_lr() / self.cfg.lr
        for opt, scale in ((self.opt_ln, 1.0), (self.opt_feat, ratio)):
            for g in (opt.param_groups if opt else []):
                g["lr"] = lr * scale

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in self.named.items()}

    def load(self, snap: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, p in self.named.items():
                p.copy_(snap[k])

    def optimizer_state(self) -> dict:
        return {"ln": self.opt_ln.state_dict() if self.opt_ln else None,
                "feat": self.opt_feat.state_dict() if self.opt_feat else None}

    def load_optimizer_state(self, st: dict) -> None:
        if self.opt_ln and st["ln"]:
            self.opt_ln.load_state_dict(st["ln"])
        if self.opt_feat and st["feat"]:
            self.opt_feat.load_state_dict(st["feat"])

    def zero_grad(self) -> None:
        for p in self.named.values():
            p.grad = None

    def apply(self, loss: torch.Tensor | None) -> str | None:
        """Backward + step; returns a skip reason (None if a step was taken). NaN guard: a
        non-finite loss or gradient skips the step; non-finite weights after it are rolled back."""
        if loss is None:
            return "degenerate"
        if not torch.isfinite(loss):
            self.zero_grad()
            return "nan_loss"
        loss.backward()
        return self.step()

    def step(self) -> str | None:
        """Step on the gradients already accumulated (guarded as in `apply`)."""
        if not all_finite([p.grad for p in self.named.values() if p.grad is not None]):
            self.zero_grad()
            return "nan_grad"
        # the rollback copy reuses its buffer: a fresh copy of SGEM's whole encoder each step cost more than AdamW
        if self._before is None or self._before.keys() != self.named.keys():
            self._before = self.snapshot()
        else:
            for k, p in self.named.items():
                self._before[k].copy_(p.detach())
        self._remember_optimizers()
        if self.opt_ln:
            self.opt_ln.step()
        if self.opt_feat:
            for _ in range(max(1, self.cfg.feature_repeat)):
                self.opt_feat.step()
        self.zero_grad()
        if not all_finite(list(self.named.values())):
            self.load(self._before)
            self._restore_optimizers()  # a continual method's AdamW outlives the utterance
            return "nan_weights"
        return None

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.opt_ln, self.opt_feat) if o is not None]

    def _remember_optimizers(self) -> None:
        """Copy the optimizers' state into the buffers of the last step (new ones only where a shape changed)."""
        saved: dict = {}
        for opt in self._optimizers():
            for p, st in opt.state.items():
                old = self._opt_before.get(p, {})
                saved[p] = {k: _copy_into(old.get(k), v) for k, v in st.items()}
        self._opt_before = saved

    def _restore_optimizers(self) -> None:
        """Back to the state `_remember_optimizers` saved, in place (shared state dicts see it); state created
        by the step (a fresh optimizer's first) is dropped."""
        for opt in self._optimizers():
            for p in list(opt.state):
                if p not in self._opt_before:
                    del opt.state[p]
                    continue
                for k, v in self._opt_before[p].items():
                    cur = opt.state[p].get(k)
                    if torch.is_tensor(cur) and torch.is_tensor(v) and cur.shape == v.shape:
                        cur.copy_(v)
                    else:
                        opt.state[p][k] = v.clone() if torch.is_tensor(v) else v


def _copy_into(buf: torch.Tensor | None, v):
    """`v` copied into `buf` where it fits, else a new copy (a non-tensor as it is)."""
    if not torch.is_tensor(v):
        return v
    if buf is not None and buf.shape == v.shape and buf.dtype == v.dtype and buf.device == v.device:
        return buf.copy_(v)
    return v.detach().clone()


LossFn = Callable[[TTAModel, dict], tuple[torch.Tensor | None, dict]]


def suta_objective(cfg: SUTAConfig) -> LossFn:
    def f(asr: TTAModel, inputs: dict) -> tuple[torch.Tensor | None, dict]:
        s = asr.scores(inputs)
        loss, info = suta_loss(s, cfg)
        info["hyp"] = getattr(asr, "last_hypothesis", None)
        return loss, info
    return f


def sdpl_objective(asr: TTAModel, inputs: dict) -> tuple[torch.Tensor | None, dict]:
    """SDPL: supervised loss on the model's own greedy transcript (the paper's baseline)."""
    loss = asr.pseudo_label_loss(inputs)
    return loss, {"loss": float(loss.detach()), "hyp": getattr(asr, "last_hypothesis", None)}


def adapt_steps(ad: ParamAdapter, inputs: dict, objective: LossFn, steps: int,
                lr_at: Callable[[int], float] | None = None) -> dict:
    """Run `steps` guarded updates on one utterance (update i at lr `lr_at(i)` where given);
    returns the loss curve and skips."""
    losses, skips, first_hyp = [], [], None
    for i in range(steps):
        if lr_at is not None:
            ad.set_lr(lr_at(i))
        loss, info = objective(ad.asr, inputs)
        if i == 0:
            first_hyp = info.get("hyp")
        losses.append(info.get("loss", math.nan))
        why = ad.apply(loss)
        if why:
            skips.append(why)
            if why == "degenerate":  # nothing will change on later steps either
                break
    return {"losses": losses, "skips": skips, "first_hyp": first_hyp}


# ---------------------------------------------------------------------------------------- methods
class Method:
    """A stream method: `process(wav)` -> row fields; `state()`/`load_state()` for exact resume."""

    name = "method"

    def process(self, wav: np.ndarray) -> dict:
        raise NotImplementedError

    def state(self) -> dict | None:
        return None  # stateless across utterances

    def load_state(self, st: dict) -> None:
        pass


class SourceMethod(Method):
    name = "source"

    def __init__(self, asr: TTAModel):
        self.asr = asr
        asr.model.eval()

    def process(self, wav: np.ndarray) -> dict:
        return {"hyp": self.asr.transcribe(self.asr.prepare(wav))}


class EpisodicMethod(Method):
    """Adapt on each utterance alone, transcribe, then reset weights *and* optimizer (episodic)."""

    lr_at: Callable[[int], float] | None = None  # a per-step lr schedule (SGEM's cosine); None = the config's lr

    def __init__(self, asr: TTAModel, cfg: SUTAConfig, objective: str = "suta"):
        self.asr, self.cfg = asr, cfg
        self.name = objective
        self.ad = ParamAdapter(asr, cfg)
        self.source = self.ad.snapshot()
        self.objective = suta_objective(cfg) if objective == "suta" else sdpl_objective

    def process(self, wav: np.ndarray) -> dict:
        inputs = self.asr.prepare(wav)
        self.ad.load(self.source)
        self.ad.new_optimizer()
        rec = adapt_steps(self.ad, inputs, self.objective, self.cfg.steps, self.lr_at)
        hyp = self.asr.transcribe(inputs)
        self.ad.load(self.source)
        return {"hyp": hyp, "source_hyp": rec["first_hyp"], "losses": rec["losses"], "skips": rec["skips"]}


def config_dict(cfg: SUTAConfig) -> dict:
    return asdict(cfg)
