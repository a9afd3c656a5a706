"""Device maps: planning units over devices, resolving user maps, loading and dispatching."""
from __future__ import annotations

import pytest
import torch

import workbench
from workbench.errors import DeviceMapError
from workbench.models.placement import auto_device_map, dispatch, plan_units, resolve_device_map, unit_of
from workbench.models.qwen_audio import load_qwen_audio

PROMPT = "<audio>{clip}</audio><|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"


@pytest.fixture(scope="module")
def units(tiny_qwen) -> dict[str, int]:
    return plan_units(tiny_qwen.network)


def test_units_follow_the_forward_order_and_hold_every_parameter(tiny_qwen, units):
    layers = len(tiny_qwen.llm.model.layers)
    assert list(units)[:3] == ["encoder", "llm.model.embed_tokens", "llm.model.rotary_emb"]
    assert list(units)[3:3 + layers] == [f"llm.model.layers.{i}" for i in range(layers)]
    assert list(units)[-2:] == ["llm.model.norm", "llm.lm_head"]
    total = sum(p.numel() * p.element_size() for p in tiny_qwen.network.parameters())
    assert sum(units.values()) == total


def test_auto_map_is_contiguous_and_balanced(units):
    devices = [torch.device("cuda:0"), torch.device("cuda:1")]
    placed = auto_device_map(units, devices)
    order = [devices.index(placed[name]) for name in units]
    assert order == sorted(order) and set(order) == {0, 1}      # one hop per forward pass
    assert placed["encoder"] == devices[0] and placed["llm.lm_head"] == devices[1]
    per_device = [sum(size for name, size in units.items() if placed[name] == d) for d in devices]
    assert abs(per_device[0] - per_device[1]) <= max(units.values())   # off by at most one unit


def test_auto_map_on_one_device_puts_everything_there(units):
    assert set(auto_device_map(units, [torch.device("cpu")]).values()) == {torch.device("cpu")}
    with pytest.raises(DeviceMapError, match="found no device"):
        auto_device_map(units, [])


def test_the_longest_prefix_wins_and_names_are_dotted(units):
    placed = resolve_device_map({"": "cpu", "llm.model.layers.1": "meta"}, units)
    assert placed["llm.model.layers.1"] == torch.device("meta")
    assert placed["encoder"] == placed["llm.model.layers.0"] == torch.device("cpu")
    assert not unit_of("llm.model.layers.10", "llm.model.layers.1")
    assert unit_of("llm.model.layers.10", "llm.model") and unit_of("anything", "")


def test_bad_device_maps_say_what_to_fix(units):
    with pytest.raises(DeviceMapError, match=r"places no device for \['llm.model.embed_tokens'"):
        resolve_device_map({"encoder": "cpu"}, units)
    with pytest.raises(DeviceMapError, match="match no part of this model"):
        resolve_device_map({"": "cpu", "transformer.h": "cpu"}, units)
    with pytest.raises(DeviceMapError, match="is not a device"):
        resolve_device_map({"": "gpu-zero"}, units)
    with pytest.raises(DeviceMapError, match="use 'auto' or a dict"):
        resolve_device_map("balanced", units)
    if torch.cuda.device_count() < 8:
        with pytest.raises(DeviceMapError, match="CUDA device"):
            resolve_device_map({"": "cuda:7"}, units)


def test_dispatch_moves_hidden_states_to_the_next_units_device(tiny_dir, tiny_clip):
    # The meta device stands in for a second GPU: the final norm and the LM head live there, so
    # logits on meta prove that the hooks carried the hidden states across the boundary.
    model = load_qwen_audio(tiny_dir / "checkpoint")
    placement = {name: torch.device("cpu") for name in plan_units(model.network)}
    for name in ("llm.model.norm", "llm.lm_head"):
        model.network.get_submodule(name).to("meta")
        placement[name] = torch.device("meta")
    dispatch(model.network, placement)
    logits = model.forward(PROMPT.format(clip=tiny_clip)).logits
    assert logits.device.type == "meta" and logits.shape[-1] == model.llm.config.vocab_size
    assert model.describe()["device"] == "cpu, meta"


def test_a_device_mapped_load_equals_the_single_device_load(tiny_qwen, tiny_dir, tiny_clip, golden_arrays):
    mapped = load_qwen_audio(tiny_dir / "checkpoint", device_map={"encoder": "cpu", "llm": "cpu"})
    assert all(module._forward_pre_hooks for module in
               (mapped.encoder, mapped.llm.model.layers[0], mapped.llm.lm_head))
    prompt = PROMPT.format(clip=tiny_clip)
    assert torch.equal(mapped.forward(prompt).logits, tiny_qwen.forward(prompt).logits)
    assert mapped.generate(prompt, max_new_tokens=8).ids == golden_arrays["case0_generated"].tolist()


def test_device_and_device_map_together_is_refused(tiny_dir):
    with pytest.raises(ValueError, match="pass one of them"):
        load_qwen_audio(tiny_dir / "checkpoint", device="cpu", device_map="auto")


def test_auto_on_a_cpu_only_machine_loads_on_cpu(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'auto' places the model there")
    model = workbench.load(tiny_dir / "checkpoint", device_map="auto")
    assert model.describe()["device"] == "cpu"


def test_whisper_refuses_qwen_audio_options(tmp_path):
    from tiny_models import write_whisper

    with pytest.raises(TypeError, match="options of Qwen-Audio checkpoints"):
        workbench.load(write_whisper(tmp_path), device_map="auto")
