"""DVT: three exits, the official checkpoint layout, feature and relationship reuse (values and
gradients), early exit (outputs, exits, per-sample MACs, later stages run only where needed) and
threshold fitting for a budget.

The official code is not available in CI. By hand, against github.com/blackfeather-wang/Dynamic-Vision-
Transformer at 22cc895 (its `.cuda()` zero tensor moved to the input's device to run on CPU) with the
same weights and 2 random 224x224 images, eval mode, max |diff| of the three exits' logits (scale ~1):
dvt_t2t_vit_12 0 / 3.0e-7 / 4.5e-7, dvt_t2t_vit_14 0 / 5.1e-7 / 7.8e-7, dvt_deit_small 0 / 1.2e-6 / 1.1e-6."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import vitfast
from vitfast.layers import use_backend
from vitfast.models import count_macs, count_params
from vitfast.models import dvt, t2t_vit  # noqa: F401  (registers the models)
from vitfast.models.dvt import STAGE_NAMES, evaluate_thresholds, fit_thresholds

@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """These tensors are tiny: one intra-op thread runs them as fast, and keeps a loaded CI machine from
    stalling on thread barriers (observed: 0.3 s -> 17 s per test at load 8 on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(img_size=64, depth=2, num_classes=10)  # grids 2x2, 3x3, 4x4 (T2T) / 2x2, 3x3, 4x4 (DeiT)


def small(name="dvt_t2t_vit_12", **kw):
    torch.manual_seed(0)
    narrow = dict(embed_dim=96, num_heads=2) if name == "dvt_deit_small" else {}  # DeiT-S is wide: CI time
    return vitfast.create_model(name, **{**SMALL, **narrow, **kw}).eval()


def images(n, size=64):
    return torch.randn(n, 3, size, size)


@pytest.fixture(scope="module")
def model():
    """A shared small dvt_t2t_vit_12 in eval mode, for the tests that only run it (its exit MACs are
    counted once)."""
    return small()


@pytest.mark.parametrize("name,grids", [("dvt_t2t_vit_12", [(7, 7), (10, 10), (14, 14)]),
                                        ("dvt_t2t_vit_14", [(7, 7), (10, 10), (14, 14)]),
                                        ("dvt_deit_small", [(7, 7), (10, 10), (14, 14)])])
def test_full_size_geometry_and_parameter_count(name, grids):
    with torch.device("meta"):
        m = vitfast.create_model(name)
    assert [s.grid_size for s in m.stages] == grids
    # Parameter counts of the official DVT models (measured by hand with the official code).
    assert count_params(m) == {"dvt_t2t_vit_12": 22461516, "dvt_t2t_vit_14": 67881836,
                               "dvt_deit_small": 70442232}[name]


def test_exit_macs_are_cumulative_and_include_the_reuse_modules():
    with torch.device("meta"):
        m = vitfast.create_model("dvt_t2t_vit_12")
        backbone = vitfast.create_model("t2t_vit_12")
    macs = m.exit_macs(224)
    assert macs == (467702400, 1446098208, 3455014176)  # 0.47G, 1.45G, 3.46G
    assert macs[0] == count_macs(m.less_less_token, 224)  # the first stage reuses nothing
    # The last stage is T2T-ViT-12 (1.76G counted, 1.78G published) plus its reuse modules.
    assert macs[2] - macs[1] > count_macs(backbone, 224)
    with pytest.raises(ValueError, match="takes 224x224 images"):
        m.exit_macs(160)


@pytest.mark.parametrize("name", ["dvt_t2t_vit_12", "dvt_deit_small"])
def test_forward_returns_three_exits_and_the_summed_loss_reaches_every_stage(name):
    m = small(name, drop_path_rate=0.1).train()
    x, y = images(3), torch.randint(0, 10, (3,))
    outs = m(x)
    assert isinstance(outs, list) and [o.shape for o in outs] == [(3, 10)] * 3
    sum(F.cross_entropy(o, y) for o in outs).backward()  # DVT's training loss
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    dead = {n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0}
    # As in the official model, the last stage's last block's feature reuse only feeds patch tokens,
    # which nothing reads (the head takes the class token, whose reused slot is zero).
    assert dead == {n for n, _ in trainable if n.startswith("normal_token.blocks.1.feature_resuse_mlp.")}, dead
    assert {n.split(".")[0] for n, _ in trainable} == set(STAGE_NAMES)


def test_later_exits_backpropagate_into_earlier_stages_through_reuse():
    for kw in (dict(feature_reuse=True, relation_reuse=False), dict(feature_reuse=False, relation_reuse=True)):
        m = small(**kw).train()
        F.cross_entropy(m(images(2))[2], torch.tensor([1, 2])).backward()  # the last exit only
        g = m.less_less_token.blocks[0].attn.qkv.weight.grad  # reaches stage 1 only through reuse
        assert g is not None and g.abs().sum() > 0, kw
        assert m.less_less_token.head.weight.grad is None


def test_relationship_reuse_adds_the_transformed_logits_to_stage_2_attention():
    m = small(feature_reuse=False)
    s1, s2 = m.less_less_token, m.less_token
    x = images(2)
    _, _, rels = s1.forward_stage(x, return_relations=True)
    assert len(rels) == 2 and rels[0].shape == (2, 4, 5, 5)  # (B, heads, 1 + 2x2, 1 + 2x2)
    bias = s2.reuse_relations(rels, s1.grid_size)
    assert len(bias) == 2 and bias[0].shape == (2, 4, 10, 10) and bias[0].abs().min() > 0
    _, _, with_reuse = s2.forward_stage(x, relations=rels, src_grid=s1.grid_size, return_relations=True)
    _, _, without = s2.forward_stage(x, return_relations=True)
    # Block 0 sees the same input either way: its logits differ by exactly the reused bias.
    torch.testing.assert_close(with_reuse[0] - without[0], bias[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(with_reuse[1], without[1])
    # The bias is differentiable: gradients reach relation_reuse_conv and stage 1's attention.
    loss = s2.forward_stage(x, relations=rels, src_grid=s1.grid_size)[0].logsumexp(-1).sum()
    loss.backward()
    for p in list(s2.relation_reuse_conv.parameters()) + [s1.blocks[1].attn.qkv.weight]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_feature_reuse_widens_every_mlp_input_with_the_resampled_tokens():
    m = small(relation_reuse=False)
    s1, s2 = m.less_less_token, m.less_token
    assert all(b.mlp.fc1.in_features == 256 + 48 and b.norm2.normalized_shape == (304,) for b in s2.blocks)
    assert not hasattr(s1.blocks[0], "feature_resuse_mlp") and s1.blocks[0].mlp.fc1.in_features == 256
    x = images(2)
    _, tokens, _ = s1.forward_stage(x)
    reused = s2.reuse_features(s2.blocks[0], tokens, s1.grid_size)
    assert reused.shape == (2, 10, 48) and torch.equal(reused[:, 0], torch.zeros(2, 48))  # cls slot zero
    with torch.no_grad():  # 2x2 -> nearest 4x4 -> average pool 3x3: corner cells copy a source cell
        f = s2.blocks[0].feature_resuse_mlp(tokens)[:, 1:]
        torch.testing.assert_close(reused[:, 1], f[:, 0])
        torch.testing.assert_close(reused[:, 9], f[:, 3])
        torch.testing.assert_close(reused[:, 2], (f[:, 0] + f[:, 1]) / 2)


def official_dvt_keys(backbone, depth):
    """State-dict names of the official DVT models (models/t2t_vit.py, models_deit.py, its timm's
    vision_transformer.py), including the official spelling feature_resuse_mlp."""
    wb = ("weight", "bias")
    block = [f"{m}.{p}" for m in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for p in wb]
    block += ["attn.qkv.weight", "attn.qkv.bias"] if backbone == "deit" else ["attn.qkv.weight"]
    reuse = [f"feature_resuse_mlp.{m}.{p}" for m in ("0", "1.fc1", "1.fc2") for p in wb]
    if backbone == "t2t":
        layer = [f"{m}.{p}" for m in ("kqv", "proj", "norm1", "norm2", "mlp.0", "mlp.2") for p in wb] + ["w"]
        embed = [f"tokens_to_token.attention{i}.{k}" for i in (1, 2) for k in layer]
        embed += ["tokens_to_token.project.weight", "tokens_to_token.project.bias"]
    else:
        embed = ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    keys = set()
    for i, stage in enumerate(STAGE_NAMES):
        names = embed + ["cls_token", "pos_embed", "norm.weight", "norm.bias", "head.weight", "head.bias"]
        names += [f"blocks.{b}.{k}" for b in range(depth) for k in block + (reuse if i else [])]
        names += [f"relation_reuse_conv.{c}.{p}" for c in (0, 2) for p in wb] if i else []
        keys |= {f"{stage}.{k}" for k in names}
    return keys


@pytest.mark.parametrize("name,backbone", [("dvt_t2t_vit_12", "t2t"), ("dvt_deit_small", "deit")])
def test_official_checkpoint_layout_loads_strict(tmp_path, name, backbone):
    kw = dict(embed_dim=96, num_heads=2) if backbone == "deit" else {}
    src = small(name, **kw)
    sd = src.state_dict()
    assert set(sd) == official_dvt_keys(backbone, 2)
    if backbone == "t2t":
        assert sd["less_less_token.tokens_to_token.attention1.kqv.weight"].shape == (192, 3 * 14 * 14)
        assert sd["less_token.tokens_to_token.attention1.kqv.weight"].shape == (192, 3 * 11 * 11)
        assert sd["normal_token.relation_reuse_conv.0.weight"].shape == (3 * 8, 8, 1, 1)
    else:
        assert sd["less_token.patch_embed.proj.weight"].shape == (96, 3, 23, 23)
        assert src.less_token.patch_embed.proj.padding == (3, 3)
    # Our names are the official ones: the inverse mapping is the identity, inside DVT's checkpoint dict.
    path = tmp_path / f"{name}.pth.tar"
    torch.save({"model_state_dict": sd, "flops": [0.5, 1.4, 3.4], "anytime_classification": [70.0, 78.0, 80.0],
                "dynamic_threshold": torch.rand(59, 3)}, path)
    m = vitfast.create_model(name, **{**SMALL, **kw}, checkpoint_path=path).eval()  # strict
    x = images(2)
    with torch.no_grad():
        for a, b in zip(m(x), src(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    if backbone == "t2t":  # another image size: every stage's position embedding is resampled
        m96 = vitfast.create_model(name, **{**SMALL, "img_size": 96}, checkpoint_path=path)
        assert [s.pos_embed.shape[1] for s in m96.stages] == [1 + 3 * 3, 1 + 4 * 4, 1 + 6 * 6]


def test_reuse_switches_remove_their_modules():
    m = small(feature_reuse=False, relation_reuse=False)
    assert not any("feature_resuse_mlp" in k or "relation_reuse_conv" in k for k in m.state_dict())
    assert [o.shape for o in m(images(2))] == [(2, 10)] * 3


def test_early_exit_extremes_reproduce_the_first_and_last_exit(model):
    m = model
    x = images(5)
    with torch.no_grad():
        outs = m(x)
    macs = m.exit_macs()
    first = m.early_exit(x, [0.0, 0.0])
    assert torch.equal(first.logits, outs[0]) and torch.equal(first.predictions, outs[0].argmax(-1))
    assert first.exits.tolist() == [0] * 5 and first.macs.tolist() == [macs[0]] * 5
    last = m.early_exit(x, [1.01, 1.01, 0.5])
    assert torch.equal(last.logits, outs[2]) and torch.equal(last.predictions, outs[2].argmax(-1))
    assert last.exits.tolist() == [2] * 5 and last.macs.tolist() == [macs[2]] * 5
    with pytest.raises(ValueError, match="need 2 or 3 thresholds, got 1"):
        m.early_exit(x, [0.5])


def test_early_exit_runs_later_stages_only_on_the_samples_that_need_them(model):
    m = model
    x = images(8)
    with torch.no_grad():
        outs = m(x)
    conf = [o.softmax(-1).amax(-1) for o in outs]
    # Thresholds mid-gap: exit 2 runs on a sub-batch, whose confidences may differ by rounding.
    c1 = conf[0].sort().values
    t1 = (c1[3] + c1[4]).item() / 2  # 4 of 8 leave at exit 1
    c2 = conf[1][conf[0] < t1].sort().values
    t2 = (c2[1] + c2[2]).item() / 2  # 2 of the remaining 4 leave at exit 2
    macs = m.exit_macs()
    seen = []
    hooks = [s.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
             for s in (m.less_less_token.tokens_to_token, m.less_token.tokens_to_token, m.normal_token.tokens_to_token)]
    with use_backend("eager"), FlopCounterMode(display=False) as counter:
        r = m.early_exit(x, [t1, t2])
    for h in hooks:
        h.remove()
    assert seen == [8, 4, 2]
    assert sorted(r.exits.tolist()) == [0, 0, 0, 0, 1, 1, 2, 2]
    assert r.macs.tolist() == [macs[e] for e in r.exits.tolist()]
    assert counter.get_total_flops() // 2 == r.macs.sum().item()  # the work done is what is reported
    for i, e in enumerate(r.exits.tolist()):
        torch.testing.assert_close(r.logits[i], outs[e][i], rtol=1e-5, atol=1e-5)


def random_exit_logits(n, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = []
    for sharp in (1.0, 2.0, 3.0):  # later exits: more confident, more often right
        lg = torch.randn(n, classes, generator=g) * sharp
        lg[torch.arange(n), labels] += sharp
        logits.append(lg)
    return logits, labels


@pytest.mark.parametrize("budget", [1.3e9, 2.0e9, 3.1e9, 4.5e9])
def test_fit_thresholds_meets_a_budget_closely(budget):
    exit_macs = (1.0e9, 2.5e9, 5.0e9)
    logits, labels = random_exit_logits(4000)
    fit = fit_thresholds(logits, labels, budget, exit_macs)
    assert fit.mean_macs <= budget
    assert fit.mean_macs >= budget - 0.002 * (exit_macs[-1] - exit_macs[0])  # within 10 M of it
    acc, mean, fractions = evaluate_thresholds(logits, labels, fit.thresholds, exit_macs)
    assert (acc, mean, fractions) == (fit.accuracy, fit.mean_macs, fit.exit_fractions)
    assert abs(sum(fractions) - 1) < 1e-9 and fit.thresholds[-1] == 0.0
    # Fresh logits from the same distribution cost about the same.
    test_logits, test_labels = random_exit_logits(4000, seed=1)
    _, test_mean, _ = evaluate_thresholds(test_logits, test_labels, fit.thresholds, exit_macs)
    assert abs(test_mean / budget - 1) < 0.05


def test_fit_thresholds_edges_and_use_with_early_exit(model):
    logits, labels = random_exit_logits(500)
    with pytest.raises(ValueError, match="below the cost of the first exit"):
        fit_thresholds(logits, labels, 0.5e9, (1e9, 2e9, 3e9))
    everything = fit_thresholds(torch.stack(logits), None, 3e9, (1e9, 2e9, 3e9))
    assert everything.exit_fractions == (0.0, 0.0, 1.0) and everything.accuracy is None
    assert fit_thresholds(logits, labels, 1e9, (1e9, 2e9, 3e9)).exit_fractions == (1.0, 0.0, 0.0)
    # Thresholds fitted on a model's own logits route its images the same way in early_exit.
    m = model
    x = images(8)
    with torch.no_grad():
        outs = m(x)
    macs = m.exit_macs()
    fit = fit_thresholds(outs, None, (macs[0] + macs[1]) / 2, macs)
    r = m.early_exit(x, fit.thresholds)
    assert r.macs.double().mean().item() == pytest.approx(fit.mean_macs) and fit.mean_macs <= (macs[0] + macs[1]) / 2
    assert tuple((torch.bincount(r.exits, minlength=3) / 8).tolist()) == fit.exit_fractions


def test_bad_input_and_overrides(model):
    m = model
    with pytest.raises(ValueError, match="expects 3 input channels, got 1"):
        m(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="expects 64x64 images, got 96x96; create it with img_size=96"):
        m.early_exit(torch.randn(1, 3, 96, 96), [0.5, 0.5])
    with pytest.raises(ValueError, match="does not take the override 'drop_path'"):
        vitfast.create_model("dvt_t2t_vit_12", drop_path=0.1)
    m = vitfast.create_model("dvt_deit_small", img_size=96, in_chans=1, num_classes=3, depth=1, drop_rate=0.1,
                             attn_drop_rate=0.1, drop_path_rate=0.1, embed_dim=96, num_heads=2)
    assert [o.shape for o in m(torch.randn(2, 1, 96, 96))] == [(2, 3)] * 3
    assert "less_token.cls_token" in m.no_weight_decay()
    m.reset_classifier(4)
    assert [o.shape for o in m.eval()(torch.randn(1, 1, 96, 96))] == [(1, 4)] * 3
