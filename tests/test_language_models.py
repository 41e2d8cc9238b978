"""Language model builders: text_moe (encoder classifiers), gpt_moe (causal LM), moe_llm (pretrained MoE LLMs)."""

from __future__ import annotations

import pytest
import torch

from namex_bench.methods.registry import available_methods
from namex_bench.models.registry import ModelConfigError, get_builder
from namex_bench.models.text_moe import load_encoder

METHODS = sorted(available_methods())
TINY_BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_T5 = {"model_type": "t5", "vocab_size": 30522, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
           "dropout_rate": 0.0, "feed_forward_proj": "gated-gelu"}


def build(builder: str, params: dict, method: str, *args, options: dict | None = None, seed: int = 0):
    b = get_builder(builder)
    torch.manual_seed(seed)
    return b.build(b.validate(params), method, options or {}, *args)


def text_batch(tokenizer):
    return dict(tokenizer(["a gripping, funny film", "dull and far too long, with nothing to say"], padding=True, return_tensors="pt"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("config", [TINY_BERT, TINY_T5], ids=["bert", "t5"])
def test_upcycled_encoder_equals_dense_encoder(config, method):
    params = {"config": config, "tokenizer": "all-MiniLM-L6-v2", "moe_blocks": "every", "num_experts": 3}
    model = build("text_moe", params, method, 2).eval()
    torch.manual_seed(0)
    dense = load_encoder(get_builder("text_moe").validate(params)).eval()
    batch = text_batch(model.tokenizer)
    with torch.no_grad():
        hidden = dense(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = model.backbone.head((hidden * mask).sum(1) / mask.sum(1))
        out = model(**batch)
    assert len(model.moe_layers) == 2
    torch.testing.assert_close(out.output, expected, atol=2e-5, rtol=1e-4)


def test_minilm_from_the_archive_upcycles_exactly():
    model = build("text_moe", {"pretrained": "all-MiniLM-L6-v2", "moe_blocks": "every_other", "num_experts": 2}, "namex_mom", 2).eval()
    assert len(model.moe_layers) == 3 and model.moe_layers[0].spec.d_hidden == 1536
    from transformers import AutoModel

    from namex_bench.data.tokenizers import resolve_pretrained

    dense = AutoModel.from_pretrained(resolve_pretrained("all-MiniLM-L6-v2")).eval()
    batch = text_batch(model.tokenizer)
    with torch.no_grad():
        hidden = dense(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = model.backbone.head((hidden * mask).sum(1) / mask.sum(1))
        torch.testing.assert_close(model(**batch).output, expected, atol=2e-5, rtol=1e-4)
        with pytest.raises(RuntimeError, match="outside MoEModel.forward"):  # the slots need the model's pass
            model.backbone.encoder(**batch)


def test_sequence_pooling_ignores_padding():
    model = build("text_moe", {"config": TINY_BERT, "tokenizer": "all-MiniLM-L6-v2", "num_experts": 3, "upcycle_noise": 0.5}, "namex", 2).eval()
    tok = model.tokenizer
    alone = dict(tok(["a short one"], return_tensors="pt"))
    padded = dict(tok(["a short one", "a much much longer sentence that forces padding of the first"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        torch.testing.assert_close(model(**alone).output[0], model(**padded).output[0], atol=1e-5, rtol=1e-4)


def test_text_params_are_checked():
    with pytest.raises(ModelConfigError, match="exactly one of"):
        get_builder("text_moe").validate({})
    with pytest.raises(ModelConfigError, match="needs a `tokenizer`"):
        get_builder("text_moe").validate({"config": TINY_BERT})


GPT = {"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 64, "num_experts": 3, "segment_length": 8}


@pytest.mark.parametrize("method", METHODS)
def test_gpt_moe_never_uses_future_tokens(method):
    model = build("gpt_moe", GPT, method).eval()
    ids = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(ids).output.logits
        for t in (3, 8, 17, 39):  # inside the first segment, on a boundary, later
            changed = ids.clone()
            changed[:, t:] = (changed[:, t:] + 1234) % 50257
            logits = model(changed).output.logits
            torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-5, rtol=1e-5)
            assert not torch.allclose(logits[:, t], base[:, t])


def test_gpt_moe_trains_and_routes_segments():
    model = build("gpt_moe", GPT, "namex_mom")
    assert [layer.pooling for layer in model.moe_layers] == ["segment", "segment"]
    assert model.tokenizer.eos_token_id == 50256 and model.config.vocab_size == 50257
    ids = torch.randint(0, 50257, (2, 16))
    out = model(ids)
    loss = torch.nn.functional.cross_entropy(out.output.logits.flatten(0, 1), ids.roll(-1, 1).flatten()) + out.aux_loss
    loss.backward()
    layer = model.moe_layers[1]
    assert layer.router.gate.weight.grad is not None and layer.experts.w_in.grad.abs().sum() > 0


def test_gpt_moe_params_are_checked():
    with pytest.raises(ModelConfigError, match="needs n_layer"):
        get_builder("gpt_moe").validate({"n_embd": 32, "n_head": 4})
    with pytest.raises(ModelConfigError, match="leave out n_layer"):
        get_builder("gpt_moe").validate({"pretrained": "gpt2", "n_layer": 2})
    with pytest.raises(ModelConfigError, match="leave out tokenizer"):
        get_builder("gpt_moe").validate({"pretrained": "gpt2", "tokenizer": "byte-tokenizer"})


def test_gpt_moe_over_bytes_has_a_257_token_vocabulary():
    model = build("gpt_moe", {**GPT, "tokenizer": "byte-tokenizer"}, "namex")
    assert model.config.vocab_size == len(model.tokenizer) == 257 and model.tokenizer.eos_token_id == 256
    assert model.backbone.lm_head.weight.shape == (257, 32)
    ids = torch.tensor([list(b"To be")])
    assert model(ids).output.logits.shape == (1, 5, 257)


def test_gpt_moe_upcycles_a_local_dense_gpt2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from namex_bench.data.tokenizers import gpt2_tokenizer

    torch.manual_seed(0)
    dense = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=32, n_layer=2, n_embd=32, n_head=4)).eval()
    dense.save_pretrained(tmp_path)
    gpt2_tokenizer().save_pretrained(tmp_path)
    model = build("gpt_moe", {"pretrained": str(tmp_path), "upcycle_noise": 0.0}, "ep_camex").eval()
    ids = torch.randint(0, 50257, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).output.logits, dense(ids).logits, atol=1e-4, rtol=1e-4)


QWEN = {"model_type": "qwen2_moe", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16, "num_experts": 4,
        "num_experts_per_tok": 2, "max_position_embeddings": 64}


def test_moe_llm_stand_in_smoe_equals_original():
    from transformers import AutoConfig, AutoModelForCausalLM

    model = build("moe_llm", {"config": QWEN}, "smoe").eval()
    torch.manual_seed(0)
    original = AutoModelForCausalLM.from_config(AutoConfig.for_model(**{"vocab_size": 50257, **QWEN})).eval()
    ids = torch.randint(0, 50257, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).output.logits, original(ids).logits, atol=1e-5, rtol=1e-4)
    merged = build("moe_llm", {"config": QWEN}, "namex").eval()
    with torch.no_grad():
        logits = merged(ids).output.logits
    assert torch.isfinite(logits).all() and not torch.allclose(logits, original(ids).logits)
