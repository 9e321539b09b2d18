"""Models at the tiny preset: tokenizer, world model + GRU memory, explorer, LoRA, optimizer helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from f1.shared.config import load_config
from f1.shared.errors import UserError
from f1.train.models.explorer import REAL_ACTION_DIMS, Explorer
from f1.train.models.lora import apply_lora, base_backbone_state_dict, load_adapter, save_adapter
from f1.train.optim import count_parameters, make_optimizer, make_scheduler, set_policy_requires_grad
from f1.train.models.tokenizer import FSQTokenizer
from f1.train.models.world_model import CodeEmbedding, CodePrediction, FactorizedCodes, WorldModel, mixture_mode

H, N, LEVELS = 4, 256, (16, 16, 16, 16)  # history, tokens a frame, FSQ levels (tiny preset)
K, W = 65536, 64  # codes: prod(LEVELS); world-model outputs a position: sum(LEVELS)


def tiny_cfg(*overrides: str):
    return load_config(overrides=["model.preset=tiny", *overrides])


def smooth_frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n,size,size,3) frames like a wrist camera's: one shaded table, a coloured disc moving over it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    table = np.stack([60 + 80 * yy, 110 + 40 * xx, 70 + 30 * yy * xx], -1)  # (size,size,3)
    frames = np.repeat(table[None], n, 0)
    for i in range(n):
        cx, cy = rng.uniform(0.25, 0.75, 2)
        frames[i][(xx - cx) ** 2 + (yy - cy) ** 2 < 0.04] = rng.integers(0, 255, 3)
    return torch.from_numpy(frames.round().astype(np.uint8))


def chunk_inputs(batch: int, length: int, cfg, seed: int = 0, with_head: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a, s = cfg.training.action_dim, cfg.training.state_dim
    inputs = {
        "wrist_hist": torch.randint(0, K, (batch, length, H, N), generator=g),
        "action_hist": torch.randn(batch, length, H, a, generator=g),
        "state": torch.randn(batch, length, s, generator=g),
        "pad_mask": torch.zeros(batch, length, H, dtype=torch.bool),
        "is_first": torch.zeros(batch, length, dtype=torch.bool),
    }
    if with_head:
        inputs["head"] = torch.randint(0, K, (batch, length, N), generator=g)
    inputs["is_first"][:, 0] = True
    inputs["pad_mask"][:, 0, :-1] = True  # step 0 of an episode: every past slot is padding
    return inputs


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_shapes_any_input_size():
    tok = FSQTokenizer.from_config(tiny_cfg())
    assert (tok.n_tokens, tok.codebook_size) == (N, K)
    frames = smooth_frames(3, 50)  # not the tokenizer's 64: resized inside
    tokens = tok.encode(frames)
    assert tokens.shape == (3, N) and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < K
    images = tok.decode(tokens)
    assert images.shape == (3, 3, 64, 64)
    assert 0.0 <= images.min() and images.max() <= 1.0
    out = tok(frames)
    for key in ("recon", "loss", "recon_loss", "l1_loss", "gradient_loss", "ssim", "perplexity", "code_usage"):
        assert key in out, key
    assert out["recon"].shape == (3, 3, 64, 64)


def test_box_mean_is_the_stride_1_average_pool_and_ssim_of_a_frame_with_itself_is_1():
    from f1.train.models.tokenizer import box_mean, ssim_map

    x = torch.rand(2, 3, 20, 17, dtype=torch.float64)
    assert torch.allclose(box_mean(x, 7), torch.nn.functional.avg_pool2d(x, 7, stride=1))
    frames = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim_map(frames, frames), torch.ones(2, 3, 10, 10), atol=1e-4)
    assert ssim_map(frames, torch.rand(2, 3, 16, 16)).mean() < 0.2  # unrelated noise: no shared structure


def test_tokenizer_overfits_a_few_frames():
    torch.manual_seed(0)
    tok = FSQTokenizer.from_config(tiny_cfg("model.tokenizer_image_size=32"))  # 4x cheaper than 64, same design
    frames = smooth_frames(8, 32)
    opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        out = tok(frames)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["recon_loss"].item())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.5 * first, (first, last)
    assert out["code_usage"].item() > 4 / K, out["code_usage"].item()  # no collapse onto one code


def test_fsq_codes_digits_and_decoding():
    tok = FSQTokenizer.from_config(tiny_cfg())
    every = torch.arange(K)
    digits = tok.tokens_to_digits(every)  # (K,D)
    assert torch.equal(tok.digits_to_tokens(digits), every)  # a bijection between codes and digit tuples
    assert all(int(digits[:, i].max()) == level - 1 for i, level in enumerate(LEVELS))
    # the quantiser reaches every code: encoder outputs that bound exactly onto a code's digits round to it
    half = (torch.tensor(LEVELS).float() - 1) / 2
    z = torch.atanh((digits.float() / half - 1).clamp(-0.999, 0.999))  # (K,D): tanh(z) hits the digit's value
    _, tokens = tok.quantize(z.T.reshape(1, len(LEVELS), 1, K))  # (1,D,1,K): K positions on a 1 x K grid
    assert torch.equal(tokens.flatten(), every)
    # decoding codes is decoding their digits' values
    codes = torch.randint(0, K, (2, N))
    values = tok.digits_to_values(tok.tokens_to_digits(codes).float())  # (2,N,D)
    assert values.min() >= -1 and values.max() <= 1
    assert torch.equal(tok.decode(codes), tok.decode_values(values))


def test_tokenizer_save_load_round_trip(tmp_path):
    tok = FSQTokenizer.from_config(tiny_cfg())
    frames = smooth_frames(4, 64)
    tok.eval()
    tok.save(tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["levels"] == list(LEVELS)
    loaded = FSQTokenizer.load(tmp_path / "tok")
    assert torch.equal(loaded.encode(frames), tok.encode(frames))
    assert torch.equal(loaded.decode(tok.encode(frames)), tok.decode(tok.encode(frames)))


def test_tokenizer_load_errors_name_the_directory(tmp_path):
    with pytest.raises(UserError, match="missing_dir"):
        FSQTokenizer.load(tmp_path / "missing_dir")
    bad = tmp_path / "corrupt"
    FSQTokenizer.from_config(tiny_cfg()).save(bad)
    (bad / "tokenizer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        FSQTokenizer.load(bad)


# --------------------------------------------------------------------------- world model


def test_world_model_shapes_and_uncertainty():
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    inputs = chunk_inputs(2, 3, cfg)
    prediction, memory, trace = wm.forward_chunk(inputs, wm.initial_memory(2))
    assert prediction.logits.shape == (2, 3, N, W) and prediction.codes.shape == (2, 3, N)
    assert memory.shape == (cfg.model.memory_num_layers, 2, cfg.model.memory_hidden)
    assert trace.shape == (2, 3, cfg.model.memory_hidden)
    step, _ = wm.step(*(inputs[k][:, 0] for k in ("wrist_hist", "head", "action_hist", "state", "pad_mask")),
                      wm.initial_memory(2), inputs["is_first"][:, 0])
    assert step.logits.shape == (2, N, W) and step.codes.shape == (2, N)
    unc = wm.uncertainty(step.logits)
    assert unc.shape == (2,) and torch.all(unc > 0) and torch.all(unc <= np.log(K) + 1e-4)
    # without a head frame the model still runs (student side)
    no_head = {k: v for k, v in inputs.items() if k != "head"}
    assert wm.forward_chunk(no_head, wm.initial_memory(2))[0].logits.shape == (2, 3, N, W)


def test_forward_chunk_equals_step_by_step():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS).eval()
    inputs = chunk_inputs(2, 4, cfg)
    inputs["is_first"][1, 2] = True
    inputs["pad_mask"][1, 2, :-1] = True
    start = torch.randn(cfg.model.memory_num_layers, 2, cfg.model.memory_hidden)
    (logits, codes), memory, _ = wm.forward_chunk(inputs, start)
    step_memory = start
    for k in range(4):
        args = [inputs[key][:, k] for key in ("wrist_hist", "head", "action_hist", "state", "pad_mask")]
        (step_logits, step_codes), step_memory = wm.step(*args, step_memory, inputs["is_first"][:, k], step_index=k)
        assert torch.allclose(step_logits, logits[:, k], atol=1e-5), (k, (step_logits - logits[:, k]).abs().max())
        assert torch.equal(step_codes, codes[:, k])
    assert torch.allclose(step_memory, memory, atol=1e-6)


def test_world_model_learns_to_move_the_frame():
    """Frame t+1 = frame t shifted one cell to the right: the pointer learns it in a few dozen steps."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    inputs = chunk_inputs(2, 3, cfg)
    side = int(N**0.5)
    current = inputs["wrist_hist"][:, :, -1].view(2, 3, side, side)
    targets = torch.roll(current, shifts=1, dims=-1).reshape(2, 3, N)  # every cell takes its left neighbour's code
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False  # a padded position: excluded from the loss
    opt = torch.optim.AdamW(wm.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        prediction, _, _ = wm.forward_chunk(inputs, wm.initial_memory(2))
        loss, accuracy = wm.loss(prediction, targets, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert accuracy.item() > 0.5, accuracy.item()  # copying scores ~1/65536 here


def test_loss_counts_valid_positions_only():
    wm = WorldModel(tiny_cfg(), N, LEVELS)
    logits = torch.randn(2, 3, N, W)
    targets = torch.randint(0, K, (2, 3, N))
    mask = torch.tensor([[True, False, True], [False, False, True]])
    codes = targets.clone()
    codes[0, 0, : N // 2] = (targets[0, 0, : N // 2] + 1) % K  # half of one valid frame wrong, all of a masked one
    codes[0, 1] = (targets[0, 1] + 1) % K
    loss, accuracy = wm.loss(CodePrediction(logits, codes), targets, mask)
    assert accuracy.item() == pytest.approx(1 - 0.5 / 3)  # 3 valid frames, half of one wrong
    # the code's cross-entropy = the sum of its digits' cross-entropies (mixed radix, first digit fastest)
    digits = [targets % 16, targets // 16 % 16, targets // 256 % 16, targets // 4096]
    parts = logits.split(LEVELS, dim=-1)
    expected = sum(
        torch.nn.functional.cross_entropy(part[mask].reshape(-1, level), digit[mask].reshape(-1))
        for part, digit, level in zip(parts, digits, LEVELS)
    )
    assert torch.allclose(loss, expected)
    garbage = logits.clone()
    garbage[~mask] = 1e4  # what sits at masked positions cannot matter
    assert torch.allclose(wm.loss(CodePrediction(garbage, codes), targets, mask)[0], expected)
    empty, acc = wm.loss(CodePrediction(logits, codes), targets, torch.zeros(2, 3, dtype=torch.bool))
    assert empty.item() == 0.0 and acc.item() == 0.0


def test_a_code_is_embedded_as_the_sum_of_its_digits_rows_whatever_its_layout():
    embed = CodeEmbedding(LEVELS, 8)
    tokens = torch.randint(0, K, (3, 5))
    digits = FactorizedCodes(LEVELS).digits(tokens)  # (3,5,4)
    want = sum(embed.digit_embed.weight[digits[..., i] + 16 * i] for i in range(4))  # (3,5,8)
    assert torch.allclose(embed(tokens), want, atol=1e-6)
    assert torch.allclose(embed(tokens.t()), want.transpose(0, 1), atol=1e-6)  # a strided view (rollout histories are)


def test_the_most_likely_code_is_the_mixtures_mode_not_each_digits_most_likely_value():
    """Two digits of 4 levels (code = d0 + 4 d1). The pointer holds (1,0) 0.32, (1,2) 0.28, (3,1) 0.2, (2,1) 0.2:
    digit 0 is most likely 1 (0.6), digit 1 most likely 1 (0.4), but code (1,1) has no mass at all."""
    codes = FactorizedCodes((4, 4))
    neighbours = torch.tensor([[[1, 9, 7, 6]]])  # (1,1,4): (1,0), (1,2), (3,1), (2,1)
    flow = torch.tensor([[[0.32, 0.28, 0.2, 0.2]]])
    generator = [torch.log_softmax(torch.tensor([[[0.0, 0.0, 0.0, 3.0]]]), -1)] * 2  # its own mode: (3,3) = 15
    one_hot = torch.nn.functional.one_hot(codes.bins(neighbours), 8).sum(-2).float()  # (1,1,4,8) each neighbour's digits
    marginals = (flow.unsqueeze(-1) * one_hot).sum(-2)  # (1,1,8) the pointer's
    assert codes.argmax(marginals.log()).item() == 5  # (1,1): each digit's most likely value
    assert mixture_mode(codes, neighbours, flow, torch.ones(1, 1), generator).item() == 1  # the pointer's heaviest code
    assert mixture_mode(codes, neighbours, flow, torch.zeros(1, 1), generator).item() == 15  # the generator alone
    # a neighbour repeated pools its mass: 0.2 + 0.2 on (2,1) beats 0.32 on (1,0)
    repeated = torch.tensor([[[1, 9, 6, 6]]])
    assert mixture_mode(codes, repeated, flow, torch.ones(1, 1), generator).item() == 6


def test_untrained_world_model_copies_the_current_frame():
    """The copy bonus starts the model at "frame t+1 = frame t" (the output head starts at zero)."""
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    inputs = chunk_inputs(2, 3, cfg)
    prediction, _, _ = wm.forward_chunk(inputs, wm.initial_memory(2))
    assert torch.equal(prediction.codes, inputs["wrist_hist"][:, :, -1])
    assert torch.equal(wm.codes.argmax(prediction.logits), inputs["wrist_hist"][:, :, -1])


def test_advancing_the_memory_alone_gives_the_steps_memory():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS).eval()
    inputs = chunk_inputs(2, 1, cfg)
    args = [inputs[key][:, 0] for key in ("wrist_hist", "head", "action_hist", "state", "pad_mask")]
    memory = torch.randn(cfg.model.memory_num_layers, 2, cfg.model.memory_hidden)
    is_first = torch.tensor([True, False])
    _, want = wm.step(*args, memory, is_first)
    got = wm.advance_memory(inputs["wrist_hist"][:, 0, -1], inputs["action_hist"][:, 0, -1], inputs["state"][:, 0], memory, is_first)
    assert torch.equal(got, want)


def test_memory_is_exactly_zero_where_is_first():
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    inputs = chunk_inputs(2, 5, cfg)
    inputs["is_first"][0, 3] = True  # lane 0 starts a new episode at step 3
    stale = torch.randn(cfg.model.memory_num_layers, 2, cfg.model.memory_hidden)  # memory left by a previous chunk
    _, _, trace = wm.forward_chunk(inputs, stale)
    assert torch.all(trace[:, 0] == 0), trace[:, 0].abs().max()
    assert torch.all(trace[0, 3] == 0), trace[0, 3].abs().max()
    assert trace[1, 3].abs().max() > 0  # lane 1 carries its memory on
    assert trace[0, 2].abs().max() > 0


def _grads_of_step_loss(wm, inputs, step):
    torch.nn.init.normal_(wm.logits_head.weight, std=0.02)  # it starts at zero (a copying model), which passes no gradient
    inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    logits = wm.forward_chunk(inputs, wm.initial_memory(inputs["state"].shape[0]))[0].logits
    grads = torch.autograd.grad(logits[:, step].sum(), [inputs["action_hist"], inputs["state"]])
    # per step: total gradient magnitude reaching that step's action history and state
    return [float(ga.abs().sum() + gs.abs().sum()) for ga, gs in zip(grads[0].unbind(1), grads[1].unbind(1))]


def test_gradients_cross_steps_through_memory_but_not_an_episode_start():
    torch.manual_seed(0)
    cfg = tiny_cfg("training.memory_backprop=true")
    wm = WorldModel(cfg, N, LEVELS)
    inputs = chunk_inputs(1, 6, cfg)
    inputs["is_first"][0, 3] = True  # episodes: steps 0-2 and 3-5
    per_step = _grads_of_step_loss(wm, inputs, step=5)
    assert per_step[0] == per_step[1] == per_step[2] == 0.0, per_step  # before the reset: exactly zero
    assert per_step[3] > 0 and per_step[4] > 0, per_step  # earlier steps of the same episode
    assert per_step[5] > 0, per_step


def test_memory_backprop_false_cuts_gradients_between_steps():
    torch.manual_seed(0)
    cfg = tiny_cfg("training.memory_backprop=false")
    wm = WorldModel(cfg, N, LEVELS)
    per_step = _grads_of_step_loss(wm, chunk_inputs(1, 4, cfg), step=3)
    assert per_step[:3] == [0.0, 0.0, 0.0], per_step
    assert per_step[3] > 0, per_step


def test_none_memory_raises_naming_the_step():
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    inputs = chunk_inputs(2, 3, cfg)
    with pytest.raises(ValueError, match="step 0"):
        wm.forward_chunk(inputs, None)
    args = [inputs[k][:, 1] for k in ("wrist_hist", "head", "action_hist", "state", "pad_mask")]
    with pytest.raises(ValueError, match="step 7"):
        wm.step(*args, None, inputs["is_first"][:, 1], step_index=7)


def test_memory_disabled_stays_zeros():
    cfg = tiny_cfg("model.memory_enabled=false")
    wm = WorldModel(cfg, N, LEVELS)
    _, memory, trace = wm.forward_chunk(chunk_inputs(2, 3, cfg), wm.initial_memory(2))
    assert torch.all(memory == 0) and torch.all(trace == 0)
    assert not any("gru" in name for name, _ in wm.named_parameters())


def test_local_backbone_path_with_another_width(tmp_path):
    from transformers import LlamaConfig, LlamaModel

    local = LlamaModel(LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=8, bos_token_id=None, eos_token_id=None))
    local.save_pretrained(tmp_path / "llama")
    cfg = tiny_cfg(f"model.backbone_path={tmp_path / 'llama'}")
    wm = WorldModel(cfg, N, LEVELS)
    assert torch.equal(wm.backbone.layers[0].self_attn.q_proj.weight, local.layers[0].self_attn.q_proj.weight)
    assert isinstance(wm.in_proj, torch.nn.Linear) and wm.in_proj.out_features == 32
    assert wm.forward_chunk(chunk_inputs(1, 2, cfg), wm.initial_memory(1))[0].logits.shape == (1, 2, N, W)
    with pytest.raises(UserError, match="nowhere"):
        WorldModel(tiny_cfg(f"model.backbone_path={tmp_path / 'nowhere'}"), N, LEVELS)


# --------------------------------------------------------------------------- explorer


def test_explorer_act_and_evaluate_are_consistent():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    explorer = Explorer(cfg, N, LEVELS)
    tokens = torch.randint(0, K, (5, N))
    memory = torch.randn(cfg.model.memory_num_layers, 5, cfg.model.memory_hidden)
    mean, log_std, value = explorer(tokens, memory)
    assert mean.shape == (5, REAL_ACTION_DIMS) and log_std.shape == (REAL_ACTION_DIMS,) and value.shape == (5,)
    action, log_prob, value2 = explorer.act(tokens, memory)
    assert action.shape == (5, cfg.training.action_dim) and log_prob.shape == (5,)
    assert torch.all(action[:, REAL_ACTION_DIMS:] == 0)
    assert torch.allclose(value, value2)
    log_prob2, entropy, value3 = explorer.evaluate_actions(tokens, memory, action)
    assert torch.allclose(log_prob, log_prob2, atol=1e-5), (log_prob, log_prob2)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(action[:, :REAL_ACTION_DIMS]).sum(-1)
    assert torch.allclose(log_prob2, expected, atol=1e-5)
    assert entropy.shape == (5,) and torch.allclose(entropy, entropy[0].expand(5))  # state-independent std
    deterministic, _, _ = explorer.act(tokens, memory, deterministic=True)
    assert torch.allclose(deterministic[:, :REAL_ACTION_DIMS], mean)


def test_explorer_sees_the_frame_averaged_over_2x2_cells():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    explorer = Explorer(cfg, N, LEVELS).eval()
    lengths = []
    explorer.backbone.register_forward_hook(lambda module, args, kwargs, out: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    side = int(N**0.5)
    tokens = torch.randint(0, K, (1, N))
    memory = torch.randn(cfg.model.memory_num_layers, 1, cfg.model.memory_hidden)
    mean, _, value = explorer(tokens, memory)
    assert lengths == [1 + N // 4 + 2]  # memory, the pooled frame, two queries
    with torch.no_grad():  # codes and positions swapped inside every 2x2 cell: the same averages, the same outputs
        explorer.grid_pos_embed.zero_()
        swapped = tokens.view(side // 2, 2, side // 2, 2).flip(1).flip(3).reshape(1, N)
        assert torch.allclose(explorer(tokens, memory)[0], explorer(swapped, memory)[0], atol=1e-5)


def test_explorer_from_world_model_copies_without_sharing():
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    explorer = Explorer.from_world_model(wm, cfg)
    for name, tensor in wm.backbone.state_dict().items():
        assert torch.equal(explorer.backbone.state_dict()[name], tensor), name
    assert torch.equal(explorer.token_embed.digit_embed.weight, wm.token_embed.digit_embed.weight)
    assert explorer.token_embed.digit_embed.weight.data_ptr() != wm.token_embed.digit_embed.weight.data_ptr()


# --------------------------------------------------------------------------- LoRA


def test_lora_trains_only_adapters_and_heads(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    wm_before = {k: v.clone() for k, v in wm.state_dict().items()}
    explorer = apply_lora(Explorer.from_world_model(wm, cfg), cfg.model.lora)
    trainable = {name for name, p in explorer.named_parameters() if p.requires_grad}
    adapters = {name for name in trainable if "lora_" in name}
    assert adapters and all(any(t in name for t in cfg.model.lora.target_modules) for name in adapters), adapters
    assert trainable - adapters == {n for n, _ in explorer.named_parameters() if n.split(".")[0] in Explorer.LORA_TRAINABLE}
    counts = count_parameters(explorer)
    assert 0 < counts["trainable"] < 0.2 * counts["total"], counts

    base_before = {k: v.clone() for k, v in base_backbone_state_dict(explorer.backbone).items()}
    params_before = {n: p.detach().clone() for n, p in explorer.named_parameters()}
    optimizer = make_optimizer(explorer, cfg.training, learning_rate=1e-2)
    tokens = torch.randint(0, K, (4, N))
    memory = torch.randn(cfg.model.memory_num_layers, 4, cfg.model.memory_hidden)
    for _ in range(3):
        _, log_prob, value = explorer.act(tokens, memory)
        loss = -log_prob.mean() + (value - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {n for n, p in explorer.named_parameters() if not torch.equal(p, params_before[n])}
    assert changed == trainable, (sorted(changed ^ trainable))[:5]
    for name, tensor in base_backbone_state_dict(explorer.backbone).items():
        assert torch.equal(tensor, base_before[name]), name  # base weights bit-identical
    for name, tensor in wm.state_dict().items():
        assert torch.equal(tensor, wm_before[name]), name  # the world model untouched

    explorer.eval()
    expected = explorer(tokens, memory)
    path = save_adapter(explorer, tmp_path / "checkpoint-3")
    assert (path / "adapter_config.json").is_file() and path.name == "peft_adapter"
    restored = Explorer.from_world_model(wm, cfg)  # base weights + heads from a full state dict, then the adapter
    restored.load_state_dict({k: v for k, v in explorer.state_dict().items() if not k.startswith("backbone.")}, strict=False)
    load_adapter(restored, tmp_path / "checkpoint-3")
    restored.eval()
    for a, b in zip(expected, restored(tokens, memory)):
        assert torch.equal(a, b)


def test_lora_errors_are_user_errors(tmp_path):
    cfg = tiny_cfg("model.lora.target_modules=[qkv_proj]")
    with pytest.raises(UserError, match="qkv_proj"):
        apply_lora(WorldModel(cfg, N, LEVELS), cfg.model.lora)
    with pytest.raises(UserError, match="peft_adapter"):
        load_adapter(Explorer(tiny_cfg(), N, LEVELS), tmp_path)


# --------------------------------------------------------------------------- optimizer helpers


def test_optimizer_groups_skip_decay_on_norms_biases_embeddings():
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    optimizer = make_optimizer(wm, cfg.training)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == cfg.training.weight_decay and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    for p in (wm.token_embed.digit_embed.weight, wm.grid_pos_embed, wm.pooled_pos_embed, wm.out_norm.weight, wm.logits_head.bias,
              wm.backbone.layers[0].input_layernorm.weight):
        assert id(p) in ids
    assert id(wm.logits_head.weight) in {id(p) for p in decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(wm.parameters()))


def test_scheduler_warms_up_then_decays():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, warmup=4, total=20, min_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])), lrs
    assert lrs[-1] == pytest.approx(0.1, abs=0.02)


def test_set_policy_requires_grad_groups():
    cfg = tiny_cfg()
    wm = WorldModel(cfg, N, LEVELS)
    set_policy_requires_grad(wm, freeze_vision_encoder=True)
    assert not wm.token_embed.digit_embed.weight.requires_grad and wm.logits_head.weight.requires_grad
    set_policy_requires_grad(wm, freeze_vision_encoder=False, freeze_gen_expert=True)
    assert wm.token_embed.digit_embed.weight.requires_grad and not wm.flow_head.weight.requires_grad
    set_policy_requires_grad(wm, train_gen_expert_only=True)
    trainable = {n.split(".")[0] for n, p in wm.named_parameters() if p.requires_grad}
    assert trainable == set(WorldModel.PARAMETER_GROUPS["generator"]), trainable
    explorer = apply_lora(Explorer(cfg, N, LEVELS), cfg.model.lora)
    set_policy_requires_grad(explorer, train_act_expert_only=True)
    trainable = {n.split(".")[0] for n, p in explorer.named_parameters() if p.requires_grad}
    assert trainable == set(Explorer.LORA_TRAINABLE), trainable
