"""Will this training run fit in GPU memory? An estimate before the Job starts, not an OOM an hour in.

Pure arithmetic on `litgpt_runtime.config.Config` (no torch import), so the operator can call it before it
creates a training Job (`litgpt_operator` installs this package without torch), and people can ask
`litgpt fit_check <repo_id> --method full --gpu_memory_gb 24`.

Per GPU, the estimate adds up:

    weights      every parameter, in the storage dtype (float32 under *-mixed, the "master" copy);
                 with --quantize (QLoRA) the frozen Linear weights at their quantized size
                 (`litgpt_runtime.quantize.Mode.bytes_per_weight`) plus one layer dequantized
    gradients    trainable parameters, same dtype
    optimizer    AdamW: two states per trainable parameter, same dtype as the parameter
    casts        *-mixed: the 16-bit copy autocast keeps of each trainable weight during forward
    activations  what autograd saves per token and layer (see `_saved_per_token_layer`)
    logits       micro_batch x seq x vocab: logits, their float32 upcast and its gradient
    sharding     FSDP: weights/gradients/optimizer divided by the world size, plus the gathered
                 blocks in flight; DDP: a second copy of the gradients in its buckets
    overhead     CUDA context and allocator slack: 1 GiB + 5 %

Assumptions (each errs towards "does not fit"): no activation checkpointing, every sample padded
to `max_seq_length`, PEFT parameters counted exactly as `litgpt_runtime.peft` builds them. The budget is
`gpu_memory_gb` in GiB, which is what a "24 GB" or "80 GB" card reports.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from litgpt_runtime.config import Config, find_preset
from litgpt_runtime.errors import UserError
from litgpt_runtime.methods import ADAPTER, LORA, METHODS, LoRAOptions, MethodName
from litgpt_runtime.precision import training_precision
from litgpt_runtime.quantize import Quantize
from litgpt_runtime.train.launch import Strategy

GIB = 1024**3
DEFAULT_SEQ_LENGTH = 2048
"""Sequence length assumed when none is given: the longest sample decides, but few exceed this."""
GPUS_PER_NODE = 8
"""Largest node we suggest when proposing more GPUs."""
EXIT_DOES_NOT_FIT = 3


@dataclass(frozen=True)
class TrainingSetup:
    """What is being run: method, numerics and scale."""

    method: MethodName = "lora"
    precision: str = "bf16-mixed"
    micro_batch_size: int = 1
    max_seq_length: int = DEFAULT_SEQ_LENGTH
    devices: int = 1
    """GPUs per node."""
    num_nodes: int = 1
    strategy: Strategy = "auto"
    """As in the runtime: `auto` is DDP on several GPUs (each holds everything); `fsdp` shards."""
    lora: LoRAOptions = LORA
    adapter_prompt_length: int = ADAPTER.prompt_length
    adapter_start_layer: int = ADAPTER.start_layer
    quantize: Quantize = None
    """QLoRA: the frozen base weights quantized with bitsandbytes (lora only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", training_precision(self.precision, allow_test=False))
        if self.method not in METHODS:
            raise UserError(f"Unknown method {self.method!r}; choose one of {', '.join(METHODS)}.")
        for name in ("micro_batch_size", "max_seq_length", "devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (got {getattr(self, name)}).")
        if self.quantize is not None:
            from litgpt_runtime.quantize import mode

            mode(self.quantize)
            if self.method != "lora":
                raise UserError(f"--quantize applies to --method lora (QLoRA), not {self.method}.")
            if self.precision.endswith("-mixed") or self.strategy == "fsdp":
                clash = "--strategy fsdp" if self.strategy == "fsdp" else f"--precision {self.precision}"
                raise UserError(f"--quantize does not combine with {clash}; "
                                "use bf16-true, 16-true or 32-true on one GPU or with DDP.")

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp" and self.world_size > 1

    def describe(self) -> str:
        gpus = f"{self.world_size} GPU{'s' if self.world_size > 1 else ''}"
        if self.world_size > 1:
            gpus += " (FSDP)" if self.sharded else " (DDP)"
        method = f"{self.method} over a {self.quantize} base" if self.quantize else self.method
        return (f"{method} at {self.precision}, micro-batch {self.micro_batch_size} x "
                f"{self.max_seq_length} tokens on {gpus}")


# --- parameter counts (exactly what litgpt_runtime.model / litgpt_runtime.peft build) --------------------------

def _norm_params(config: Config, size: int) -> int:
    return size if config.norm_class_name == "RMSNorm" else 2 * size  # LayerNorm has a bias


def _linears(config: Config) -> dict[str, tuple[int, int, bool]]:
    """Per layer: name -> (in_features, out_features, has_bias)."""
    e, hs, i = config.n_embd, config.head_size, config.intermediate_size
    q, kv = config.n_head * hs, config.n_query_groups * hs
    layers = {
        "qkv": (e, q + 2 * kv, config.bias or config.attn_bias),
        "proj": (q, e, config.bias),
    }
    if config.mlp_class_name == "GptNeoxMLP":
        layers.update(fc=(e, i, config.bias), mlp_proj=(i, e, config.bias))
    else:
        layers.update(fc_1=(e, i, config.bias), fc_2=(e, i, config.bias), mlp_proj=(i, e, config.bias))
    return layers


def _norms_per_layer(config: Config) -> int:
    return 2 + int(config.post_attention_norm) + int(config.post_mlp_norm)


def count_parameters(config: Config) -> int:
    """Parameters of `litgpt_runtime.model.GPT(config)` (tied embeddings counted once)."""
    e, v = config.n_embd, config.padded_vocab_size
    per_layer = sum(i * o + (o if b else 0) for i, o, b in _linears(config).values())
    per_layer += _norms_per_layer(config) * _norm_params(config, e)
    if config.norm_qk:
        per_layer += 2 * config.head_size  # RMSNorm weights of q and k
    head = (0 if config.tie_embeddings else v * e) + (v if config.lm_head_bias else 0)
    return v * e + config.n_layer * per_layer + _norm_params(config, e) + head


def _lora_parameters(config: Config, lora: LoRAOptions) -> int:
    r, e, hs = lora.r, config.n_embd, config.head_size
    q, kv = config.n_head * hs, config.n_query_groups * hs
    linears = _linears(config)
    parts = [size for size, on in ((q, lora.query), (kv, lora.key), (kv, lora.value)) if on]
    per_layer = (r * len(parts) * e + sum(parts) * r) if parts else 0  # stacked A, B of the qkv parts
    if lora.projection:
        per_layer += r * (q + e)
    if lora.mlp:
        per_layer += sum(r * (i + o) for name, (i, o, _) in linears.items() if name not in ("qkv", "proj"))
    head = r * (e + config.padded_vocab_size) if lora.head else 0
    return config.n_layer * per_layer + head


def _adapter_parameters(config: Config, setup: TrainingSetup) -> int:
    layers = max(0, config.n_layer - setup.adapter_start_layer)
    return layers * (setup.adapter_prompt_length * config.n_embd + config.n_head)  # prompt + gate


def _adapter_v2_parameters(config: Config, setup: TrainingSetup) -> int:
    # Scale and bias on every Linear's output, all norm parameters, plus the adapter's own.
    per_layer = sum(2 * o for _, o, _ in _linears(config).values())
    per_layer += _norms_per_layer(config) * _norm_params(config, config.n_embd)
    if config.norm_qk:
        per_layer += 2 * config.head_size
    extra = 2 * config.padded_vocab_size + _norm_params(config, config.n_embd)  # lm_head, ln_f
    return config.n_layer * per_layer + extra + _adapter_parameters(config, setup)


def trainable_parameters(config: Config, setup: TrainingSetup) -> int:
    """Parameters with requires_grad=True in the runtime's model for `setup.method`."""
    if setup.method == "full":
        return count_parameters(config)
    if setup.method == "lora":
        return _lora_parameters(config, setup.lora)
    if setup.method == "adapter":
        return _adapter_parameters(config, setup)
    return _adapter_v2_parameters(config, setup)


def added_parameters(config: Config, setup: TrainingSetup) -> int:
    """Parameters the method adds to the base model (0 for full; the norms of adapter v2 exist already)."""
    if setup.method == "full":
        return 0
    if setup.method == "adapter_v2":
        norms = config.n_layer * (_norms_per_layer(config) * _norm_params(config, config.n_embd)
                                  + (2 * config.head_size if config.norm_qk else 0))
        return trainable_parameters(config, setup) - norms - _norm_params(config, config.n_embd)
    return trainable_parameters(config, setup)


# --- memory ----------------------------------------------------------------------------------

def quantized_parameters(config: Config, setup: TrainingSetup) -> int:
    """Weights `litgpt_runtime.quantize` stores quantized: every block Linear's weight, and the
    output head's when it is not tied to the embedding and has no LoRA."""
    if setup.quantize is None:
        return 0
    per_layer = sum(i * o for i, o, _ in _linears(config).values())
    head = 0 if config.tie_embeddings or setup.lora.head else config.padded_vocab_size * config.n_embd
    return config.n_layer * per_layer + head


def _param_bytes(precision: str) -> int:
    """Storage of a parameter: 16-bit under *-true 16-bit precisions, float32 otherwise."""
    return 2 if precision in ("bf16-true", "16-true") else 4


def _activation_bytes(precision: str) -> int:
    return 4 if precision == "32-true" else 2


def _saved_per_token_layer(config: Config, setup: TrainingSetup) -> float:
    """Bytes autograd keeps for backward, per token and layer, without activation checkpointing.

    A frozen Linear keeps no input (its input gradient needs only the weight), so what a method
    trains changes the figure: full keeps every Linear's input, LoRA the inputs of its targets.
    """
    e, hs, i = config.n_embd, config.head_size, config.intermediate_size
    q, kv = config.n_head * hs, config.n_query_groups * hs
    act = _activation_bytes(setup.precision)
    gated = config.mlp_class_name != "GptNeoxMLP"
    # Norms compute in float32 and keep their input and normalised output.
    saved = _norms_per_layer(config) * e * 8.0
    # Attention (SDPA): q, k, v after RoPE and the output; softmax statistics are negligible.
    saved += (q + 2 * kv + q) * act
    # MLP non-linearity: gate, activation, up (gated) or pre-activation, activation (GPT-NeoX).
    saved += (3 if gated else 2) * i * act
    if setup.method == "full":
        saved += (2 * e + q + (i if gated else 0)) * act  # inputs of qkv, proj, fc, mlp proj
    elif setup.method == "lora":
        lora, r = setup.lora, setup.lora.r
        targets = [(e, r * sum((lora.query, lora.key, lora.value)))] if (lora.query or lora.key or lora.value) else []
        if lora.projection:
            targets.append((q, r))
        if lora.mlp:
            targets += [(inp, r) for name, (inp, _, _) in _linears(config).items() if name not in ("qkv", "proj")]
        # The dropout's output (a fresh tensor), its mask (1 byte each) and the rank-r projection.
        saved += sum(inp * (act + 1) + rank * act for inp, rank in targets)
    elif setup.method == "adapter_v2":
        saved += sum(o for _, o, _ in _linears(config).values()) * act  # outputs, for the scales' gradients
    return saved


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU, by what holds them."""

    parts: dict[str, float]
    total_parameters: int
    trainable_parameters: int

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def breakdown(self) -> str:
        return ", ".join(f"{name} {value / GIB:.1f}" for name, value in self.parts.items() if value >= 0.05 * GIB)


def estimate(config: Config, setup: TrainingSetup) -> Estimate:
    """Peak memory per GPU of training `config` as `setup` says."""
    total = count_parameters(config) + added_parameters(config, setup)
    trainable = trainable_parameters(config, setup)
    pb = _param_bytes(setup.precision)
    shard = setup.world_size if setup.sharded else 1
    quantized = quantized_parameters(config, setup)
    weights = (total - quantized) * pb
    casts = 2 * trainable if setup.precision.endswith("-mixed") else 0
    if quantized:
        from litgpt_runtime.quantize import mode

        weights += quantized * mode(setup.quantize).bytes_per_weight
        # each quantized layer is dequantized for its matrix product: the largest one, twice
        # (forward, and backward for the input gradient)
        head_quantized = not (config.tie_embeddings or setup.lora.head)
        largest = max([i * o for i, o, _ in _linears(config).values()]
                      + ([config.padded_vocab_size * config.n_embd] if head_quantized else []))
        casts += 2 * largest * pb
    parts: dict[str, float] = {
        "weights": weights / shard,
        "gradients": trainable * pb / shard,
        "optimizer": 2 * trainable * pb / shard,
        "casts": casts,
    }
    tokens = setup.micro_batch_size * setup.max_seq_length
    parts["activations"] = tokens * config.n_layer * _saved_per_token_layer(config, setup)
    parts["logits"] = tokens * config.padded_vocab_size * (_activation_bytes(setup.precision) + 8)
    if setup.sharded:
        # Two gathered blocks in flight (current + prefetch) and the unwrapped root (embeddings, head).
        block = (count_parameters(config) - _root_parameters(config)) / config.n_layer
        parts["sharding"] = (2 * block + _root_parameters(config)) * pb
    elif setup.world_size > 1:
        parts["sharding"] = trainable * pb  # DDP's gradient buckets
    subtotal = sum(parts.values())
    parts["overhead"] = GIB + 0.05 * subtotal
    return Estimate(parts=parts, total_parameters=total, trainable_parameters=trainable)


def _root_parameters(config: Config) -> int:
    e, v = config.n_embd, config.padded_vocab_size
    return v * e * (1 if config.tie_embeddings else 2) + _norm_params(config, e)


# --- the verdict -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FitReport:
    setup: TrainingSetup
    estimate: Estimate
    gpu_memory_gib: float
    alternatives: list[tuple[str, TrainingSetup, Estimate]] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.estimate.total_gib <= self.gpu_memory_gib

    @property
    def suggestion(self) -> Optional[str]:
        if self.fits:
            return None
        if not self.alternatives:
            return "no single change (LoRA, 16-bit weights, a smaller micro-batch, shorter sequences, more GPUs with FSDP) makes it fit"
        return "; or ".join(f"{what} (~{est.total_gib:.1f} GiB)" for what, _, est in self.alternatives)

    @property
    def message(self) -> str:
        verdict = "fits" if self.fits else "does not fit"
        text = (f"{self.setup.describe()} needs ~{self.estimate.total_gib:.1f} GiB per GPU "
                f"({self.estimate.breakdown()}), {verdict} in {self.gpu_memory_gib:g} GiB.")
        if not self.fits:
            text += f" Try: {self.suggestion}."
        return text

    def to_dict(self) -> dict:
        return {
            "fits": self.fits,
            "estimateGiB": round(self.estimate.total_gib, 2),
            "gpuMemoryGiB": self.gpu_memory_gib,
            "breakdownGiB": {k: round(v / GIB, 2) for k, v in self.estimate.parts.items()},
            "totalParameters": self.estimate.total_parameters,
            "trainableParameters": self.estimate.trainable_parameters,
            "setup": dataclasses.asdict(self.setup),
            "suggestion": self.suggestion,
            "message": self.message,
        }


# A change that lowers memory: (description, new setup, how much it asks of the user).
Change = tuple[str, TrainingSetup, float]


def _cheap_changes(setup: TrainingSetup) -> list[list[tuple[str, dict, float]]]:
    """Subsets of the changes that cost no hardware: LoRA instead of full, 16-bit weights."""
    options = []
    if setup.method == "full":
        options.append(("method lora instead of full", {"method": "lora"}, 1.0))
    if setup.precision in ("32-true", "bf16-mixed", "16-mixed"):
        options.append(("precision bf16-true", {"precision": "bf16-true"}, 1.0))
    if setup.method == "lora" and setup.quantize is None and setup.strategy != "fsdp":
        options.append(("quantize bnb.nf4 (QLoRA) at precision bf16-true",
                        {"quantize": "bnb.nf4", "precision": "bf16-true"}, 1.0))
    subsets: list[list[tuple[str, dict, float]]] = [[]]
    for option in options:
        subsets += [subset + [option] for subset in subsets
                    if not {k for _, change, _ in subset for k in change} & set(option[1])]
    return subsets


def _scale_changes(setup: TrainingSetup) -> list[list[tuple[str, dict, float]]]:
    """For each kind of scale change, its values from the least to the most drastic."""
    kinds = []
    sizes = []
    mb = setup.micro_batch_size // 2
    while mb >= 1:
        sizes.append((f"micro-batch size {mb}", {"micro_batch_size": mb}, 0.5))
        mb //= 2
    kinds.append(sizes)
    gpus = []
    if setup.world_size > 1 and not setup.sharded:
        gpus.append(("strategy fsdp on the same GPUs", {"strategy": "fsdp"}, 0.5))
    world = setup.world_size * 2
    while world <= 64:
        devices, nodes = min(world, GPUS_PER_NODE), max(1, world // GPUS_PER_NODE)
        where = f"{nodes} nodes x {devices}" if nodes > 1 else f"{devices} on one node"
        gpus.append((f"{world} GPUs with strategy fsdp ({where})",
                     {"devices": devices, "num_nodes": nodes, "strategy": "fsdp"}, math.log2(world)))
        world *= 2
    kinds.append(gpus)
    seqs = []
    seq = setup.max_seq_length // 2
    while seq >= 256:
        seqs.append((f"max_seq_length {seq}", {"max_seq_length": seq}, 1.5))
        seq //= 2
    kinds.append(seqs)
    return kinds


def _alternatives(config: Config, setup: TrainingSetup, budget_gib: float) -> list[tuple[str, TrainingSetup, Estimate]]:
    """Every combination of cheap changes with at most one scale change (its least drastic value
    that fits), ordered by what they ask of the user."""
    found: list[tuple[float, str, TrainingSetup, Estimate]] = []
    for cheap in _cheap_changes(setup):
        base = dataclasses.replace(setup, **{k: v for _, change, _ in cheap for k, v in change.items()})
        cheap_cost = sum(cost for *_, cost in cheap)
        for values in [[("", {}, 0.0)]] + _scale_changes(setup):
            for what, change, cost in values:
                if not cheap and not change:
                    continue  # the setup itself
                try:
                    candidate = dataclasses.replace(base, **change)
                except UserError:  # a combination that does not exist (QLoRA with FSDP)
                    continue
                est = estimate(config, candidate)
                if est.total_gib <= budget_gib:
                    words = " and ".join([c[0] for c in cheap] + ([what] if what else []))
                    found.append((cheap_cost + cost, words, candidate, est))
                    break
    found.sort(key=lambda item: item[0])
    return [(words, candidate, est) for _, words, candidate, est in found]


def check(config: Config, setup: TrainingSetup, gpu_memory_gb: float, max_alternatives: int = 3) -> FitReport:
    """The estimate, the verdict, and when it does not fit, up to `max_alternatives` changes that
    do fit (the least the user has to give up first)."""
    if gpu_memory_gb <= 0:
        raise UserError(f"--gpu_memory_gb must be positive (got {gpu_memory_gb}).")
    report = FitReport(setup, estimate(config, setup), float(gpu_memory_gb))
    if report.fits:
        return report
    found = _alternatives(config, setup, float(gpu_memory_gb))[:max_alternatives]
    return dataclasses.replace(report, alternatives=found)


# --- `litgpt fit_check` ------------------------------------------------------------------------

def resolve_config(model: str, checkpoint_root_dir: Path = Path("checkpoints")) -> Config:
    """A known repo id / short name, a checkpoint folder, or a repo id downloaded under the root."""
    if find_preset(model) is not None:
        return Config.from_name(model)
    for candidate in (Path(model), Path(checkpoint_root_dir) / model):
        if candidate.is_dir():
            return Config.from_checkpoint(candidate)
    return Config.from_name(model)  # raises the "unknown model" message


def main(
    model: str,
    method: MethodName = "lora",
    gpu_memory_gb: float = 80.0,
    devices: int = 1,
    num_nodes: int = 1,
    precision: str = "bf16-mixed",
    micro_batch_size: int = 1,
    max_seq_length: Optional[int] = None,
    strategy: Strategy = "auto",
    lora_r: int = LORA.r,
    lora_query: bool = LORA.query,
    lora_key: bool = LORA.key,
    lora_value: bool = LORA.value,
    lora_projection: bool = LORA.projection,
    lora_mlp: bool = LORA.mlp,
    lora_head: bool = LORA.head,
    quantize: Quantize = None,
    checkpoint_root_dir: Path = Path("checkpoints"),
    json_output: bool = False,
) -> None:
    """Estimate the GPU memory of a finetuning run and say whether it fits, before starting it.

    Exits 0 when it fits, 3 when it does not (printing changes that would make it fit).

    Args:
        model: Hugging Face repo id (a known model or one under --checkpoint_root_dir) or a checkpoint folder.
        method: full, lora, adapter or adapter_v2.
        gpu_memory_gb: Memory of one GPU in GiB (what the card reports: 24 for a "24 GB" card).
        devices: GPUs per node.
        num_nodes: Number of nodes.
        precision: Training precision as the runtime takes it (bf16-true keeps weights in 16 bits).
        micro_batch_size: Samples per forward/backward pass on one GPU.
        max_seq_length: Longest training sequence in tokens (default: min(block size, 2048)).
        strategy: auto (DDP on several GPUs: each holds the whole model) or fsdp (sharded).
        lora_r: LoRA rank.
        lora_query: LoRA on the attention queries.
        lora_key: LoRA on the attention keys.
        lora_value: LoRA on the attention values.
        lora_projection: LoRA on the attention output projection.
        lora_mlp: LoRA on the MLP.
        lora_head: LoRA on the output head.
        quantize: QLoRA: the frozen base weights quantized (bnb.nf4, bnb.nf4-dq, bnb.fp4, bnb.fp4-dq, bnb.int8).
        checkpoint_root_dir: Where downloaded checkpoints live.
        json_output: Print the report as JSON.
    """
    config = resolve_config(model, checkpoint_root_dir)
    seq = max_seq_length or min(config.block_size, DEFAULT_SEQ_LENGTH)
    setup = TrainingSetup(
        method=method, precision=precision, micro_batch_size=micro_batch_size, max_seq_length=seq,
        devices=devices, num_nodes=num_nodes, strategy=strategy,
        lora=LoRAOptions(r=lora_r, query=lora_query, key=lora_key, value=lora_value,
                         projection=lora_projection, mlp=lora_mlp, head=lora_head),
        quantize=quantize,
    )
    report = check(config, setup, gpu_memory_gb)
    if json_output:
        print(json.dumps({"model": config.hf_repo_id or config.name or model, **report.to_dict()}, indent=2))
    else:
        print(f"{config.hf_repo_id or config.name or model}: {report.message}")
        print(f"parameters: {report.estimate.total_parameters:,} total, "
              f"{report.estimate.trainable_parameters:,} trainable")
    if not report.fits:
        raise SystemExit(EXIT_DOES_NOT_FIT)

