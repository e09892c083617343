"""The compiled engine's decode loop: one CUDA graph a token, no host sync per token.

transformers' `generate` with a static cache compiles the model's forward but keeps the rest of
each step in eager Python: logits processors, the top-p warper, the sampler, the stop checks, and
a device->host sync every token to ask whether all rows have stopped.  On an H200 that left a
fixed ~5.4 ms a token whatever the batch (docs/benchmarks.md, "One node on 2 GPUs"), so halving a
rank's rows did not halve its generate time.  Here the whole step (forward through the static
KV cache, log-softmax, nucleus, sampling, the stop flags) is one compiled function, replayed as one
CUDA graph (`reduce-overhead`), and the host asks whether every row has stopped only every
`CHECK_EVERY` tokens, so it queues work ahead of the GPU instead of waiting on it.

The step, for logits z over the vocabulary at temperature T and nucleus p (`sample`):

    log pi(v)   = log_softmax(z / T)(v)                    (recorded for the chosen token)
    nucleus     = the smallest prefix of tokens sorted by pi(v) descending whose mass reaches p
                  (a token is dropped when the mass before it is already >= p; the first stays)
    token       = argmax_v [ log pi(v) + g_v ]  over the nucleus,  g_v ~ Gumbel(0, 1)

which draws from pi renormalised over the nucleus (the Gumbel-max trick: Gumbel, 1954; Maddison
et al., 2014), the distribution of `generate`'s top-p sampling (Holtzman et al., 2020).  Greedy:
argmax z.  The recorded log-prob is the full distribution's, as the eager engine records it
(node/rollout/hf.py).  A row that has produced a stop token emits `pad` afterwards.

Positions: prompts are left-padded to a width W; row b's first generated token sits at position
len_b (its prompt length), in cache slot W.  The attention mask [B, length] covers the whole cache:
prompt pads and slots not yet reached are 0, and each slot turns 1 when its token is fed in.
"""

from __future__ import annotations

import inspect

import torch

CHECK_EVERY = 16  # tokens between the host's checks that every row has stopped


def sample(
    logits: torch.Tensor, temperature: float, top_p: float, greedy: bool, noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B], log pi(token) [B]) from logits [B, V] (module docstring).  `noise`: uniform
    draws in (0, 1) shaped like `logits` (None when greedy); pure, so a test can pass its own."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    if greedy:
        token = logits.argmax(dim=-1)
    else:
        score = logp
        if top_p < 1.0:
            probs, order = logp.exp().sort(dim=-1, descending=True)
            ranked = probs.cumsum(dim=-1) - probs >= top_p  # by rank: the mass ranked above reaches p
            drop = torch.zeros_like(ranked).scatter(-1, order, ranked)  # back to token order
            score = logp.masked_fill(drop, float("-inf"))
        gumbel = -torch.log(-torch.log(noise))
        token = (score + gumbel).argmax(dim=-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


class Decoder:
    """The decode loop of one model over a static cache of `length` positions: `run` generates for
    any prompt width W and max_new with W + max_new <= length.  The step's inputs have the same
    shapes whatever W ([B] tokens, [B, length] mask), so one compiled graph (per batch size)
    serves every width.  `mode`: the step goes through `torch.compile` in this mode (None: eager)."""

    def __init__(self, model, length: int, pad_id: int, stop_ids, mode: str | None):
        from transformers import StaticCache

        self.model, self.length, self.pad_id = model, length, pad_id
        device = next(model.parameters()).device
        self.cache = StaticCache(config=model.config, max_cache_len=length)
        self.stops = torch.tensor(sorted(stop_ids), device=device)
        # a LoRA model (peft) is called through its base model, whose layers carry the adapters
        self.net = model.get_base_model() if hasattr(model, "get_base_model") else model
        # the cache's keyword: `cache` from transformers 5.2x, `past_key_values` before; logits of
        # the last position only where the model can (a prefill's [B, W, V] logits would be GBs at
        # a 150k vocabulary)
        params = inspect.signature(self.net.forward).parameters
        self.kw = {"cache" if "cache" in params else "past_key_values": self.cache, "use_cache": True}
        if "logits_to_keep" in params:
            self.kw["logits_to_keep"] = 1
        self.step = torch.compile(self._step, mode=mode, fullgraph=False) if mode else self._step

    def _step(self, token, position, mask, done, temperature: float, top_p: float, greedy: bool):
        """Feed `token` [B] at `position` [B] into the cache's next slot; the next (token, log pi)."""
        out = self.net(
            input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None], **self.kw
        )
        logits = out.logits[:, -1]
        noise = None if greedy else torch.rand_like(logits, dtype=torch.float32).clamp_(min=1e-20)
        nxt, logp = sample(logits, temperature, top_p, greedy, noise)
        nxt = torch.where(done, self.pad_id, nxt)
        return nxt, logp, done | torch.isin(nxt, self.stops)

    @torch.no_grad()
    def run(self, input_ids, attention, max_new: int, temperature: float, top_p: float, greedy: bool):
        """Prompts [B, W] left-padded with their mask -> (tokens [B, S], log-probs [B, S]) on the
        host, S <= max_new (generation ends early once every row has stopped)."""
        B, W = input_ids.shape
        if W + max_new > self.length:
            raise ValueError(f"{W} prompt + {max_new} new tokens exceed the cache's {self.length} positions")
        device = self.stops.device
        self.cache.reset()
        mask = torch.zeros((B, self.length), dtype=torch.long, device=device)
        mask[:, :W] = attention
        lens = attention.sum(dim=1)
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        prefill = self.net(input_ids=input_ids, attention_mask=mask, position_ids=positions, **self.kw)
        logits = prefill.logits[:, -1]
        noise = None if greedy else torch.rand_like(logits, dtype=torch.float32).clamp_(min=1e-20)
        token, logp = sample(logits, temperature, top_p, greedy, noise)
        done = torch.isin(token, self.stops)
        tokens, logps = [token], [logp]
        for t in range(1, max_new):
            if t % CHECK_EVERY == 0 and bool(done.all()):
                break
            mask[:, W + t - 1] = 1  # the slot `token` goes into
            if self.step is not self._step:
                torch.compiler.cudagraph_mark_step_begin()
            token, logp, done = self.step(
                token.clone(), lens + t - 1, mask, done.clone(),
                temperature, top_p, greedy,
            )  # fmt: skip
            tokens.append(token.clone())
            logps.append(logp.clone())
        return torch.stack(tokens, dim=1).cpu(), torch.stack(logps, dim=1).float().cpu()
