"""Key maps: layout detection, exact key/parameter counts, strictness (missing, extra, wrong shape), round trips."""
import dataclasses

import numpy as np
import pytest

from ernievil2torch.config import base_config, parameter_shapes, tiny_config
from ernievil2torch.errors import KeyMapError
from ernievil2torch.conversion.layouts import (LAYOUTS, OFFICIAL, PADDLENLP, detect_layout, expand_rules, infer_config,
                                               plan_conversion, to_layout)
from ernievil2torch.verify.synthetic import layout_state, random_state


def layout_shapes(layout, config):
    targets = parameter_shapes(config)
    return {key: shape for rule in expand_rules(layout, config)
            for key, shape in zip(rule.sources, rule.source_shapes(targets[rule.target]))}


@pytest.mark.parametrize("layout, keys", [(OFFICIAL, 350), (PADDLENLP, 398)])
def test_full_size_layouts_match_the_released_files(layout, keys):
    shapes = layout_shapes(layout, base_config())
    assert len(shapes) == keys  # SPEC.md: 350 official keys (+ classfy), 398 PaddleNLP keys
    assert sum(int(np.prod(s)) for s in shapes.values()) == 203_738_881
    # spot-check Paddle shapes from SPEC.md
    if layout is OFFICIAL:
        assert shapes["visual.class_embedding"] == (1, 1, 768)
        assert shapes["visual.positional_embedding"] == (1, 197, 768)
        assert shapes["visual.blocks.0.attn.qkv.weight"] == (768, 2304)
        assert shapes["text_model.encoder_stack.block.11.ffn.i.weight"] == (768, 3072)
        assert shapes["contrastive_loss_mm.temperature_b"] == (1,)
    else:
        assert shapes["vision_model.class_embedding"] == (768,)
        assert shapes["vision_model.positional_embedding.weight"] == (197, 768)
        assert shapes["vision_model.transformer.layers.0.self_attn.q_proj.weight"] == (768, 768)
        assert shapes["temperature"] == (1,)


@pytest.mark.parametrize("config", [base_config(), tiny_config()], ids=["base", "tiny"])
@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_detect_and_infer_config(layout, config):
    shapes = layout_shapes(layout, config)
    assert detect_layout(shapes) is layout
    inferred = infer_config(layout, shapes)
    assert (inferred.text, inferred.vision, inferred.has_temperature) == (config.text, config.vision, True)
    assert inferred.name == config.name and inferred.model_type == config.model_type


def test_missing_temperature_means_plain_cosine_model():
    shapes = layout_shapes(OFFICIAL, tiny_config())
    del shapes["contrastive_loss_mm.temperature_b"]
    plan = plan_conversion(shapes)
    assert not plan.config.has_temperature and "temperature" not in plan.target_shapes


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_round_trip_through_each_layout_is_exact(layout):
    config = tiny_config()
    ours = random_state(config, seed=3)
    theirs = to_layout(ours, layout, config)
    plan = plan_conversion({k: v.shape for k, v in theirs.items()})
    back = {rule.target: rule.apply([theirs[k] for k in rule.sources]) for rule in plan.rules}
    assert back.keys() == ours.keys()
    for key in ours:
        np.testing.assert_array_equal(back[key], ours[key], err_msg=key)


def test_fused_qkv_rows_are_q_then_k_then_v_transposed():
    config = tiny_config()
    state = layout_state(config, "official", seed=1)
    plan = plan_conversion({k: v.shape for k, v in state.items()})
    rule = next(r for r in plan.rules if r.target == "text.layers.0.attn.qkv.weight")
    fused = rule.apply([state[k] for k in rule.sources])
    hidden = config.text.hidden_size
    for part, name in enumerate("qkv"):
        np.testing.assert_array_equal(fused[part * hidden:(part + 1) * hidden],
                                      state[f"text_model.encoder_stack.block.0.attn.{name}.weight"].T)


def test_classifier_head_is_dropped_and_reported():
    state = layout_state(tiny_config(), "official", seed=0)
    plan = plan_conversion({k: v.shape for k, v in state.items()})
    assert plan.dropped == ["visual.classfy.bias", "visual.classfy.weight"]


def _shapes(layout="official"):
    return {k: v.shape for k, v in layout_state(tiny_config(), layout, seed=0).items()}


def test_missing_key_is_named():
    shapes = _shapes()
    del shapes["text_model.encoder_stack.block.1.ln2.bias"]
    with pytest.raises(KeyMapError, match=r"missing key 'text_model\.encoder_stack\.block\.1\.ln2\.bias'"):
        plan_conversion(shapes)


def test_extra_key_is_named():
    shapes = _shapes("paddlenlp")
    shapes["text_model.encoder.layers.0.self_attn.extra.weight"] = (4, 4)
    with pytest.raises(KeyMapError, match=r"unexpected key 'text_model\.encoder\.layers\.0\.self_attn\.extra"):
        plan_conversion(shapes)


def test_wrong_shape_is_named_with_both_shapes():
    shapes = _shapes()
    shapes["visual.blocks.1.mlp.fc2.weight"] = (128, 256)
    with pytest.raises(KeyMapError, match=r"wrong shape for 'visual\.blocks\.1\.mlp\.fc2\.weight': "
                                          r"\(128, 256\), expected \(256, 128\)"):
        plan_conversion(shapes)


def test_every_problem_is_listed_at_once():
    shapes = _shapes()
    del shapes["visual.norm_pre.weight"]
    shapes["bogus"] = (1,)
    shapes["visual.norm_post.bias"] = (3,)
    with pytest.raises(KeyMapError) as info:
        plan_conversion(shapes)
    message = str(info.value)
    assert "3 problems" in message
    for fragment in ("visual.norm_pre.weight", "'bogus'", "visual.norm_post.bias"):
        assert fragment in message


def test_unknown_model_is_refused():
    with pytest.raises(KeyMapError, match="not an ERNIE-ViL 2.0 checkpoint"):
        plan_conversion({"encoder.layer.0.attention.self.query.weight": (768, 768), "pooler.dense.bias": (768,)})


def test_a_twenty_four_layer_text_tower_converts_as_a_custom_size():
    from dataclasses import replace

    base = tiny_config()
    config = replace(base, text=replace(base.text, num_layers=4))
    plan = plan_conversion(layout_shapes(OFFICIAL, config))
    assert plan.config.text.num_layers == 4 and plan.config.model_type == "ernie_vil_2.0_custom"
    assert plan.config.name is None


@pytest.mark.parametrize("config", [base_config(), tiny_config(),
                                    dataclasses.replace(tiny_config(), has_temperature=False)],
                         ids=["base", "tiny", "no-temperature"])
def test_parameter_shapes_are_the_models_state_dict(config):
    """The converter learns target shapes from the config's arithmetic: they must be the model's, in its order."""
    import torch

    from ernievil2torch.modeling import ErnieViL2

    with torch.device("meta"):
        model = ErnieViL2(config)
    expected = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    assert list(parameter_shapes(config).items()) == expected
