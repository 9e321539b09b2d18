"""Model speed: one training step (forward + backward + optimizer) of each f1 model, parameter counts.

    .venv/bin/python bench/bench_models.py [--reps 5] [--no-append]

Rows, tiny preset on the CPU (and the base preset on the GPU when CUDA is there):
- world model, one TBPTT chunk of batch 4 x bptt 8 (GPU: base, 8 x 8, with peak memory),
  wrist history + head frame in, next-frame token logits out, memory carried through the chunk.
  Baseline in the same run: a GRU-only predictor with the same inputs and outputs and the same
  memory (token embeddings + [memory, action, state] -> per-token logits, no backbone).
  Ratio = world model step time / GRU-only step time: what the transformer backbone costs.
- explorer, one PPO minibatch update (evaluate_actions + backward) of 32 samples with LoRA on
  the backbone; baseline: the same update training every parameter (no LoRA).
  Ratio = LoRA time / full time.
- tokenizer, one training step of 32 frames and encode throughput.
Medians over --reps repetitions after 2 warm-up steps; the table goes to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from results import load_average, machine, report

from f1.shared.config import F1Config, load_config
from f1.train.models.explorer import Explorer
from f1.train.models.lora import apply_lora
from f1.train.optim import count_parameters, make_optimizer
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.models.world_model import CodeEmbedding, CodePrediction, FactorizedCodes, WorldModel, grid_side


class GRUPredictor(nn.Module):
    """The baseline: the world model's inputs, outputs and memory, without a backbone."""

    def __init__(self, cfg: F1Config, n_tokens: int, levels: tuple[int, ...]):
        super().__init__()
        m, t = cfg.model, cfg.training
        d = m.hidden_size
        grid_side(n_tokens)
        self.codes = FactorizedCodes(levels)
        self.token_embed = CodeEmbedding(levels, d)
        self.grid_pos_embed = nn.Parameter(torch.randn(n_tokens, d) * 0.02)
        self.context = nn.Linear(m.memory_hidden + t.action_dim + t.state_dim, d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, self.codes.width))
        self.summary_proj = nn.Linear(d + t.action_dim + t.state_dim, d)
        self.gru = nn.GRU(d, m.memory_hidden, m.memory_num_layers)
        self.memory_shape = (m.memory_num_layers, m.memory_hidden)

    def initial_memory(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(self.memory_shape[0], batch, self.memory_shape[1], device=device)

    def forward_chunk(self, inputs: dict[str, torch.Tensor], memory: torch.Tensor):
        logits = []
        for k in range(inputs["wrist_hist"].shape[1]):
            b = memory.shape[1]
            memory = torch.where(inputs["is_first"][:, k].view(1, b, 1), torch.zeros_like(memory), memory)
            current = self.token_embed(inputs["wrist_hist"][:, k, -1]) + self.grid_pos_embed  # (B,n,d)
            action, state = inputs["action_hist"][:, k, -1], inputs["state"][:, k]
            context = self.context(torch.cat([memory[-1], action, state], -1))  # (B,d)
            logits.append(self.mlp(current + context[:, None]))  # (B,n,sum(levels))
            summary = self.summary_proj(torch.cat([current.mean(1), action, state], -1))
            _, memory = self.gru(summary[None], memory)
        logits = torch.stack(logits, 1)  # (B,L,n,sum(levels))
        return CodePrediction(logits, self.codes.argmax(logits)), memory, None

    loss = WorldModel.loss


def chunk(cfg: F1Config, batch: int, length: int, n: int, k: int, device) -> tuple[dict, torch.Tensor]:
    h, a, s = cfg.training.n_obs_img_steps, cfg.training.action_dim, cfg.training.state_dim
    inputs = {
        "wrist_hist": torch.randint(0, k, (batch, length, h, n)),
        "head": torch.randint(0, k, (batch, length, n)),
        "action_hist": torch.randn(batch, length, h, a),
        "state": torch.randn(batch, length, s),
        "pad_mask": torch.zeros(batch, length, h, dtype=torch.bool),
        "is_first": torch.zeros(batch, length, dtype=torch.bool),
    }
    inputs["is_first"][:, 0] = True
    return {key: v.to(device) for key, v in inputs.items()}, torch.randint(0, k, (batch, length, n), device=device)


def timed(step, reps: int, device) -> float:
    """Median seconds of `step()` over reps, after 2 warm-up calls."""
    times = []
    for i in range(reps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def world_model_step(model, cfg, inputs, targets, mask):
    optimizer = make_optimizer(model, cfg.training)
    memory = model.initial_memory(targets.shape[0], targets.device)

    def step():
        prediction, _, _ = model.forward_chunk(inputs, memory)
        loss = model.loss(prediction, targets, mask)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_world_model(cfg: F1Config, batch: int, length: int, reps: int, device, label: str) -> list[tuple]:
    tok = FSQTokenizer.from_config(cfg)
    n, k, levels = tok.n_tokens, tok.codebook_size, tok.levels
    inputs, targets = chunk(cfg, batch, length, n, k, device)
    mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    rows = []
    base_time = None
    for name, model in (("GRU-only predictor (baseline)", GRUPredictor(cfg, n, levels)), ("world model", WorldModel(cfg, n, levels))):
        model = model.to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(world_model_step(model, cfg, inputs, targets, mask), reps, device)
        base_time = base_time or seconds
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
        params = count_parameters(model)["total"]
        tokens_per_s = batch * length * n / seconds  # predicted next-frame tokens a second
        rows.append((f"{label}: {name}, chunk {batch}x{length}", f"{seconds * 1000:.0f} ms", f"{tokens_per_s:,.0f}",
                     f"{params:,}", peak, f"{seconds / base_time:.2f}"))
    return rows


def bench_explorer(cfg: F1Config, reps: int, device, batch: int = 32) -> list[tuple]:
    tok = FSQTokenizer.from_config(cfg)
    wm = WorldModel(cfg, tok.n_tokens, tok.levels)
    tokens = torch.randint(0, tok.codebook_size, (batch, tok.n_tokens), device=device)
    memory = torch.randn(cfg.model.memory_num_layers, batch, cfg.model.memory_hidden, device=device)
    actions = torch.randn(batch, cfg.training.action_dim, device=device)
    rows, base_time = [], None
    for name, lora in (("explorer, all parameters train (baseline)", False), ("explorer, LoRA + heads", True)):
        explorer = Explorer.from_world_model(wm, cfg)
        if lora:
            apply_lora(explorer, cfg.model.lora)
        explorer = explorer.to(device)
        optimizer = make_optimizer(explorer, cfg.training)

        def step():
            log_prob, entropy, value = explorer.evaluate_actions(tokens, memory, actions)
            loss = -log_prob.mean() - 0.001 * entropy.mean() + value.pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds = timed(step, reps, device)
        base_time = base_time or seconds
        counts = count_parameters(explorer)
        rows.append((f"tiny: {name}, PPO minibatch {batch}", f"{seconds * 1000:.0f} ms", f"{batch * tok.n_tokens / seconds:,.0f}",
                     f"{counts['trainable']:,} of {counts['total']:,}", "", f"{seconds / base_time:.2f}"))
    return rows


def bench_tokenizer(cfg: F1Config, reps: int, device, batch: int = 32) -> list[tuple]:
    tok = FSQTokenizer.from_config(cfg).to(device)
    frames = torch.randint(0, 256, (batch, cfg.model.tokenizer_image_size, cfg.model.tokenizer_image_size, 3), dtype=torch.uint8)
    optimizer = torch.optim.Adam(tok.parameters(), lr=cfg.tokenizer.learning_rate)

    def train_step():
        out = tok(frames)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    train_s = timed(train_step, reps, device)
    encode_s = timed(lambda: tok.encode(frames), reps, device)
    params = f"{count_parameters(tok)['total']:,}"
    return [
        (f"tiny: tokenizer training step, {batch} frames", f"{train_s * 1000:.0f} ms", f"{batch * tok.n_tokens / train_s:,.0f}", params, "", ""),
        (f"tiny: tokenizer encode, {batch} frames", f"{encode_s * 1000:.0f} ms", f"{batch * tok.n_tokens / encode_s:,.0f}", params, "", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-append", action="store_true", help="print only, leave bench/RESULTS.md alone")
    # One thread by default: on a small shared machine a second intra-op thread that gets
    # descheduled stalls every op (bench_online saw 2 threads run 5-30x slower under load).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    header = f"{machine()}, torch {torch.__version__} {torch.get_num_threads()} threads, load average {load_average():.1f} at start"
    cpu = torch.device("cpu")
    tiny = load_config(overrides=["model.preset=tiny"])
    rows = bench_world_model(tiny, 4, 8, args.reps, cpu, "tiny")
    rows += bench_explorer(tiny, args.reps, cpu)
    rows += bench_tokenizer(tiny, args.reps, cpu)
    gpu_note = "No CUDA device: the base-preset GPU rows were not measured."
    if torch.cuda.is_available():
        base = load_config(overrides=["model.preset=base"])
        rows += bench_world_model(base, 8, 8, args.reps, torch.device("cuda"), f"base on {torch.cuda.get_device_name()}")
        gpu_note = "GPU rows: base preset, fp32."

    columns = ("step", "time", "tokens/s", "parameters (trainable of total)", "peak GPU memory", "ratio vs baseline")
    notes = (
        f"Machine: {header}. Medians of {args.reps} steps after 2 warm-up steps; a step is forward + backward + AdamW. "
        "tokens/s: predicted next-frame tokens (world model), frame tokens in (explorer, tokenizer). "
        "Ratios: world model / GRU-only predictor with the same inputs, outputs and memory (the backbone's cost); "
        f"LoRA explorer update / full-parameter explorer update. {gpu_note}"
    )
    report("bench_models", notes, rows, columns, append=not args.no_append)


if __name__ == "__main__":
    main()
