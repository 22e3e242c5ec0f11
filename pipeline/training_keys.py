"""The ``training`` section's keys: their defaults (defined here once), their checks, and
:class:`TrainingConfig`, what the trainer reads.

KTRDR parses ``lr_scheduler``, ``early_stopping``, ``gradient_clip``, ``optimizer`` and
``weight_decay`` and then trains without them (grammar doc section 5, defect 1). We apply them,
with KTRDR's own defaults where its code has one: Adam with weight decay 1e-4 for a classifier
and 0 for regression, clipping at norm 1.0, ``lr_scheduler: true`` as reduce-on-plateau (factor
0.5, patience 5), a scheduler mapping with KTRDR's per-type defaults. The strategy loader and
the trainer both take their defaults from this module, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError
from pipeline.schema.check import Check, is_number, show

OUTPUT_FORMATS = ("classification", "regression")
LOSSES: dict[str, tuple[str, ...]] = {"classification": ("cross_entropy", "focal"),
                                      "regression": ("huber", "mse")}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
# KTRDR's ModelTrainer._create_scheduler defaults per type; ``true`` means reduce_on_plateau.
SCHEDULERS: dict[str, dict[str, float | int]] = {
    "step": {"step_size": 30, "gamma": 0.1},
    "exponential": {"gamma": 0.95},
    "reduce_on_plateau": {"factor": 0.5, "patience": 5},
}
DEFAULT_SCHEDULER = "reduce_on_plateau"  # what ``lr_scheduler: true`` turns on
EARLY_STOPPING = {"patience": 10, "min_delta": 0.0}

# Every default of the training section, by key; loss and weight decay by output format.
DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 32,
    "learning_rate": 0.001,
    "focal_gamma": 2.0,
    "huber_delta": 0.01,
    "gradient_clip": 1.0,
    "optimizer": "adam",
    "momentum": 0.9,  # sgd only, as KTRDR's
}
DEFAULT_LOSS = {"classification": "cross_entropy", "regression": "huber"}
DEFAULT_WEIGHT_DECAY = {"classification": 1e-4, "regression": 0.0}


@dataclass
class TrainingConfig:
    """The strategy's ``training`` section, as the trainer needs it.

    ``loss`` and ``weight_decay`` left as None take the output format's default.
    ``gradient_clip`` None is no clipping. ``lr_scheduler`` is None or ``{"type": ..., its
    parameters}`` with every parameter filled in.
    """

    epochs: int = DEFAULTS["epochs"]
    batch_size: int = DEFAULTS["batch_size"]
    learning_rate: float = DEFAULTS["learning_rate"]
    loss: str | None = None
    focal_gamma: float = DEFAULTS["focal_gamma"]
    early_stopping: dict | None = None  # {"patience": int, "min_delta": float}
    seed: int = 0
    output_format: str = "classification"
    huber_delta: float = DEFAULTS["huber_delta"]
    optimizer: str = DEFAULTS["optimizer"]
    weight_decay: float | None = None
    momentum: float = DEFAULTS["momentum"]
    gradient_clip: float | None = DEFAULTS["gradient_clip"]
    lr_scheduler: dict | None = field(default=None)

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise PipelineError(f"decisions.output_format: {self.output_format!r} is not "
                                f"supported; allowed: {', '.join(OUTPUT_FORMATS)}")
        if self.loss is None:
            self.loss = DEFAULT_LOSS[self.output_format]
        if self.weight_decay is None:
            self.weight_decay = DEFAULT_WEIGHT_DECAY[self.output_format]
        problems = _config_problems(self)
        if problems:
            raise PipelineError("; ".join(problems))

    @classmethod
    def from_strategy(cls, training: Mapping[str, Any]) -> TrainingConfig:
        """Read the strategy's checked ``training`` mapping; absent keys take the defaults."""
        stopping = training.get("early_stopping")
        if stopping is not None:
            stopping = {k: type(v)(stopping.get(k, v)) for k, v in EARLY_STOPPING.items()}
        seed = training.get("seed")
        given = {k: training[k] for k in ("epochs", "batch_size", "learning_rate", "loss",
                                          "focal_gamma", "huber_delta", "optimizer",
                                          "weight_decay", "momentum", "gradient_clip",
                                          "lr_scheduler", "output_format")
                 if k in training}
        return cls(early_stopping=stopping, seed=0 if seed is None else int(seed), **given)

    def described(self) -> dict[str, Any]:
        """What training applies, for the log and metrics.json: every key, defaults included."""
        out: dict[str, Any] = {
            "output_format": self.output_format, "epochs": self.epochs,
            "batch_size": self.batch_size, "learning_rate": self.learning_rate,
            "loss": self.loss, "optimizer": self.optimizer, "weight_decay": self.weight_decay,
            "gradient_clip": self.gradient_clip, "lr_scheduler": self.lr_scheduler,
            "early_stopping": self.early_stopping, "seed": self.seed,
        }
        if self.loss == "focal":
            out["focal_gamma"] = self.focal_gamma
        if self.loss == "huber":
            out["huber_delta"] = self.huber_delta
        if self.optimizer == "sgd":
            out["momentum"] = self.momentum
        return out


def describe_line(config: TrainingConfig) -> str:
    """One log line: optimizer, scheduler, clipping, early stopping."""
    sched = config.lr_scheduler
    sched_text = "no lr scheduler" if sched is None else "lr scheduler " + sched["type"] + " (" + \
        ", ".join(f"{k} {v:g}" for k, v in sched.items() if k != "type") + ")"
    clip = "no gradient clipping" if config.gradient_clip is None else \
        f"gradient clip {config.gradient_clip:g}"
    stop = "no early stopping" if config.early_stopping is None else (
        f"early stopping patience {config.early_stopping['patience']}, "
        f"min_delta {config.early_stopping['min_delta']:g}")
    loss = config.loss + (f" (delta {config.huber_delta:g})" if config.loss == "huber" else "") \
        + (f" (gamma {config.focal_gamma:g})" if config.loss == "focal" else "")
    momentum = f", momentum {config.momentum:g}" if config.optimizer == "sgd" else ""
    return (f"loss {loss}; {config.optimizer} lr {config.learning_rate:g}, weight decay "
            f"{config.weight_decay:g}{momentum}; {sched_text}; {clip}; {stop}")


def _config_problems(c: TrainingConfig) -> list[str]:
    """Every bad value of a directly built config (the strategy loader reports the same with
    key paths before a config is ever built)."""
    out = []
    if c.epochs < 1:
        out.append(f"training.epochs must be at least 1, got {c.epochs}")
    if c.batch_size < 1:
        out.append(f"training.batch_size must be at least 1, got {c.batch_size}")
    if not c.learning_rate > 0:
        out.append(f"training.learning_rate must be > 0, got {c.learning_rate}")
    if c.loss not in LOSSES[c.output_format]:
        out.append(f"training.loss: {c.loss!r} is not supported for {c.output_format}; "
                   f"allowed: {', '.join(LOSSES[c.output_format])}")
    if c.optimizer not in OPTIMIZERS:
        out.append(f"training.optimizer: {c.optimizer!r} is not supported; "
                   f"allowed: {', '.join(OPTIMIZERS)}")
    if not c.weight_decay >= 0:  # type: ignore[operator]
        out.append(f"training.weight_decay must be >= 0, got {c.weight_decay}")
    if c.gradient_clip is not None and not c.gradient_clip > 0:
        out.append(f"training.gradient_clip must be > 0 (or None: off), got {c.gradient_clip}")
    if not c.huber_delta > 0:
        out.append(f"training.huber_delta must be > 0, got {c.huber_delta}")
    sched = c.lr_scheduler
    if sched is not None and (not isinstance(sched, Mapping) or sched.get("type") not in SCHEDULERS
                              or set(sched) != {"type", *SCHEDULERS[sched["type"]]}):
        out.append(f"training.lr_scheduler: {sched!r} is not a complete scheduler; "
                   f"types: {', '.join(SCHEDULERS)}")
    return out


# --------------------------------------------------------------------------- strategy side


# Keys of ``training`` read here (labels, data_split and seed are the loader's own).
OPTIMISATION_KEYS = ("epochs", "batch_size", "learning_rate", "loss", "focal_gamma",
                     "huber_delta", "optimizer", "weight_decay", "momentum", "gradient_clip",
                     "lr_scheduler", "early_stopping")


def read_optimisation(section: Mapping[str, Any], output_format: str,
                      check: Check) -> dict[str, Any]:
    """The optimisation keys of ``training``, checked and filled with the defaults above.

    ``output_format`` decides the allowed losses and the default loss and weight decay."""
    fmt = output_format if output_format in OUTPUT_FORMATS else "classification"
    positive = ("> 0", lambda x: x > 0)
    values: dict[str, Any] = {
        "epochs": check.integer(section, "epochs", "training.epochs", DEFAULTS["epochs"], 1),
        "batch_size": check.integer(section, "batch_size", "training.batch_size",
                                    DEFAULTS["batch_size"], 1),
        "learning_rate": check.number(section, "learning_rate", "training.learning_rate",
                                      DEFAULTS["learning_rate"], *positive),
        "loss": _loss(section, fmt, check),
        "focal_gamma": check.number(section, "focal_gamma", "training.focal_gamma",
                                    DEFAULTS["focal_gamma"], ">= 0", lambda x: x >= 0),
        "huber_delta": check.number(section, "huber_delta", "training.huber_delta",
                                    DEFAULTS["huber_delta"], *positive),
        "optimizer": check.choice(section, "optimizer", "training.optimizer",
                                  DEFAULTS["optimizer"], OPTIMIZERS),
        "weight_decay": check.number(section, "weight_decay", "training.weight_decay",
                                     DEFAULT_WEIGHT_DECAY[fmt], ">= 0", lambda x: x >= 0),
        "momentum": check.number(section, "momentum", "training.momentum",
                                 DEFAULTS["momentum"], "with 0 <= momentum < 1",
                                 lambda x: 0 <= x < 1),
        "gradient_clip": _gradient_clip(section, check),
        "lr_scheduler": _lr_scheduler(section, check),
        "early_stopping": _early_stopping(section, check),
    }
    if "momentum" in section and values["optimizer"] != "sgd":
        check.warn("training.momentum", f"has no effect with optimizer {values['optimizer']} "
                   "(sgd only)")
    if "huber_delta" in section and values["loss"] != "huber":
        check.warn("training.huber_delta", f"has no effect with loss {values['loss']}")
    if "focal_gamma" in section and values["loss"] != "focal":
        check.warn("training.focal_gamma", f"has no effect with loss {values['loss']}")
    return values


def _loss(section: Mapping[str, Any], fmt: str, check: Check) -> str:
    value = section.get("loss")
    allowed = LOSSES[fmt]
    if value is None:
        return DEFAULT_LOSS[fmt]
    text = value.lower() if isinstance(value, str) else value
    if text not in allowed:
        other = next((f for f, names in LOSSES.items() if text in names and f != fmt), None)
        why = f" (a {other} loss; decisions.output_format is {fmt})" if other else ""
        check.error("training.loss", f"{show(value)} is not allowed{why}; allowed: "
                    + ", ".join(allowed))
        return DEFAULT_LOSS[fmt]
    return text


def _gradient_clip(section: Mapping[str, Any], check: Check) -> float | None:
    """A max gradient norm; ``0`` or ``false`` turns clipping off; ``true`` is the default."""
    value = section.get("gradient_clip", DEFAULTS["gradient_clip"])
    if value is None or value is True:
        return DEFAULTS["gradient_clip"]
    if value is False or (is_number(value) and value == 0):
        return None
    if not is_number(value) or value < 0:
        check.error("training.gradient_clip", f"{show(value)} is not allowed; a number > 0 "
                    "(the largest gradient norm), or 0 or false for no clipping")
        return DEFAULTS["gradient_clip"]
    return float(value)


def _lr_scheduler(section: Mapping[str, Any], check: Check) -> dict | None:
    """``true`` is reduce_on_plateau with KTRDR's defaults; a mapping names its ``type``
    (KTRDR's default type: step) and any of that type's parameters."""
    path = "training.lr_scheduler"
    value = section.get("lr_scheduler")
    if value is None or value is False:
        return None
    if value is True:
        return {"type": DEFAULT_SCHEDULER, **SCHEDULERS[DEFAULT_SCHEDULER]}
    if not isinstance(value, Mapping):
        check.error(path, f"{show(value)} is not allowed; true, false, or "
                    "{type: step|exponential|reduce_on_plateau, ...}")
        return None
    if value.get("enabled", True) is False:
        return None
    kind = check.choice(value, "type", f"{path}.type", "step", tuple(SCHEDULERS))
    defaults = SCHEDULERS[kind]
    check.unused(value, ("type", "enabled", *defaults), f"{path}.")
    out: dict[str, Any] = {"type": kind}
    for key, default in defaults.items():
        where = f"{path}.{key}"
        if isinstance(default, int):  # step_size, patience
            out[key] = check.integer(value, key, where, default, 1 if key == "step_size" else 0)
        elif key == "factor":  # torch refuses a factor >= 1
            out[key] = check.number(value, key, where, default, "with 0 < factor < 1",
                                    lambda x: 0 < x < 1)
        else:
            out[key] = check.number(value, key, where, default, "> 0", lambda x: x > 0)
    return out


def _early_stopping(section: Mapping[str, Any], check: Check) -> dict | None:
    """Off unless configured; ``true`` is the defaults; ``enabled: false`` turns it off."""
    path = "training.early_stopping"
    value = section.get("early_stopping")
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        check.error(path, f"{show(value)} is not allowed; "
                    f"{{patience: {EARLY_STOPPING['patience']}, min_delta: 0.0}} or nothing")
        return None
    check.unused(value, ("patience", "min_delta", "enabled"), f"{path}.")
    if value.get("enabled", True) is False:
        return None
    return {
        "patience": check.integer(value, "patience", f"{path}.patience",
                                  int(EARLY_STOPPING["patience"]), 1),
        "min_delta": check.number(value, "min_delta", f"{path}.min_delta",
                                  float(EARLY_STOPPING["min_delta"]), ">= 0", lambda x: x >= 0),
    }


