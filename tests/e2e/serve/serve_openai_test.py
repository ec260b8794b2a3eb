"""The official `openai` client (PyPI) against `kvfold serve`: completions, chat, streaming,
logprobs, n > 1 with seeds, stop strings, usage."""
import sys
import unittest

import openai

from serve_testlib import NAME, Server

PROMPT = "Once upon a time"
MESSAGES = [{"role": "user", "content": "Tell me a story about a cat."}]


class OpenAiClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.client = openai.OpenAI(base_url=cls.server.base_url + "/v1", api_key="unused",
                                   max_retries=0)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, cls.server.log()

    def complete(self, **kw):
        args = dict(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0)
        args.update(kw)
        return self.client.completions.create(**args)

    def test_models(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], [NAME])

    def test_completion_and_usage(self):
        r = self.complete(extra_body={"ignore_eos": True})
        self.assertEqual(len(r.choices), 1)
        self.assertTrue(r.choices[0].text)
        self.assertEqual(r.choices[0].finish_reason, "length")
        prompt_ids = self.server.request("POST", "/tokenize", {"prompt": PROMPT})[2]["tokens"]
        self.assertEqual(r.usage.prompt_tokens, len(prompt_ids))
        self.assertEqual(r.usage.completion_tokens, 24)
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 24)
        detok = self.server.request("POST", "/detokenize", {"tokens": prompt_ids})[2]["prompt"]
        self.assertIn(PROMPT, detok)

    def test_streamed_completion_equals_non_streamed(self):
        full = self.complete(max_tokens=40).choices[0]
        chunks = list(self.complete(max_tokens=40, stream=True,
                                    stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, full.text)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and
                    c.choices[0].finish_reason]
        self.assertEqual(finishes, [full.finish_reason])
        self.assertIsNotNone(chunks[-1].usage)
        self.assertEqual(chunks[-1].choices, [])

    def test_chat_streamed_equals_non_streamed(self):
        full = self.client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=30,
                                                   temperature=0)
        self.assertEqual(full.choices[0].message.role, "assistant")
        self.assertTrue(full.choices[0].message.content)
        stream = self.client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=30,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True})
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, full.choices[0].message.content)
        self.assertEqual(chunks[-1].usage.completion_tokens, full.usage.completion_tokens)
        self.assertEqual(chunks[-1].usage.prompt_tokens, full.usage.prompt_tokens)

    def test_completion_logprobs(self):
        r = self.complete(logprobs=3)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), r.usage.completion_tokens)
        self.assertEqual(len(lp.token_logprobs), len(lp.tokens))
        self.assertEqual(len(lp.text_offset), len(lp.tokens))
        self.assertEqual(lp.text_offset, sorted(lp.text_offset))
        for value, top in zip(lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(value, 0.0)
            self.assertLessEqual(len(top), 3)
            # Greedy: the sampled token is the most likely one.
            self.assertAlmostEqual(value, max(top.values()), places=4)

    def test_chat_logprobs(self):
        r = self.client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=10,
                                                temperature=0, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        for entry in content:
            self.assertEqual(bytes(entry.bytes).decode("utf-8", "replace"),
                             entry.token.encode("utf-8").decode("utf-8", "replace"))
            self.assertLessEqual(len(entry.top_logprobs), 2)
            self.assertAlmostEqual(entry.logprob, entry.top_logprobs[0].logprob, places=4)

    def prompt_ids(self, **body):
        return self.server.request("POST", "/tokenize", dict(model=NAME, **body))[2]["tokens"]

    def check_prompt_logprobs(self, plp, ids, k):
        """vLLM's shape: null, then per token {id: {logprob, rank, decoded_token}} holding the
        token itself (with its rank) and its k most likely alternatives (ranks 1..k)."""
        self.assertEqual(len(plp), len(ids))
        self.assertIsNone(plp[0])
        for token, entry in zip(ids[1:], plp[1:]):
            self.assertIn(str(token), entry)
            own = entry[str(token)]
            self.assertGreaterEqual(own["rank"], 1)
            self.assertLessEqual(own["logprob"], 0.0)
            self.assertIsInstance(own["decoded_token"], str)
            self.assertEqual(len(entry), k + (1 if own["rank"] > k else 0))
            ranks = sorted(v["rank"] for key, v in entry.items() if key != str(token) or
                           own["rank"] <= k)
            self.assertEqual(ranks, list(range(1, k + 1)))
            best = max(v["logprob"] for v in entry.values())
            self.assertTrue(any(v["rank"] == 1 and v["logprob"] == best for v in entry.values()))

    def test_prompt_logprobs(self):
        ids = self.prompt_ids(prompt=PROMPT)
        r = self.complete(max_tokens=4, extra_body={"prompt_logprobs": 2})
        plp = r.choices[0].model_extra["prompt_logprobs"]
        self.check_prompt_logprobs(plp, ids, 2)
        # Not asked: no field. Streamed: once, with the same values.
        self.assertNotIn("prompt_logprobs", self.complete(max_tokens=4).choices[0].model_extra)
        chunks = list(self.complete(max_tokens=4, stream=True,
                                    extra_body={"prompt_logprobs": 2}))
        streamed = [c.choices[0].model_extra["prompt_logprobs"] for c in chunks
                    if c.choices and c.choices[0].model_extra.get("prompt_logprobs")]
        self.assertEqual(streamed, [plp])
        # The prompt as token ids gives the same values.
        by_ids = self.complete(prompt=ids, max_tokens=4, extra_body={"prompt_logprobs": 2})
        self.assertEqual(by_ids.choices[0].model_extra["prompt_logprobs"], plp)

    def test_echo_with_logprobs_scores_the_prompt(self):
        ids = self.prompt_ids(prompt=PROMPT)
        r = self.complete(echo=True, logprobs=2, max_tokens=4)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), len(ids) + r.usage.completion_tokens)
        self.assertIsNone(lp.token_logprobs[0])
        self.assertIsNone(lp.top_logprobs[0])
        self.assertEqual(lp.text_offset[0], 0)
        plp = self.complete(max_tokens=4, extra_body={"prompt_logprobs": 2}) \
            .choices[0].model_extra["prompt_logprobs"]
        for i in range(1, len(ids)):
            self.assertAlmostEqual(lp.token_logprobs[i], plp[i][str(ids[i])]["logprob"], places=5)
            self.assertLessEqual(len(lp.top_logprobs[i]), 2)
        plain = self.complete(logprobs=2, max_tokens=4).choices[0].logprobs
        self.assertEqual(lp.tokens[len(ids):], plain.tokens)

    def test_chat_prompt_logprobs_match_completions_on_the_rendered_prompt(self):
        ids = self.prompt_ids(messages=MESSAGES)
        r = self.client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=4,
                                                temperature=0, extra_body={"prompt_logprobs": 1})
        plp = r.model_extra["prompt_logprobs"]  # vLLM: beside "choices", the prompt is shared
        self.check_prompt_logprobs(plp, ids, 1)
        self.assertEqual(r.usage.prompt_tokens, len(ids))
        same = self.complete(prompt=ids, max_tokens=4, extra_body={"prompt_logprobs": 1})
        self.assertEqual(same.choices[0].model_extra["prompt_logprobs"], plp)

    def test_n_with_seed_is_deterministic(self):
        kw = dict(max_tokens=20, temperature=1.0, seed=1234, n=3)
        a = self.complete(**kw)
        b = self.complete(**kw)
        self.assertEqual([c.index for c in a.choices], [0, 1, 2])
        self.assertEqual([c.text for c in a.choices], [c.text for c in b.choices])
        # Choice i is sampled with seed + i.
        single = self.complete(max_tokens=20, temperature=1.0, seed=1235, n=1)
        self.assertEqual(single.choices[0].text, a.choices[1].text)
        self.assertEqual(a.usage.completion_tokens,
                         sum(self.complete(max_tokens=20, temperature=1.0, seed=1234 + i)
                             .usage.completion_tokens for i in range(3)))

    def test_prompt_list_choice_order(self):
        prompts = ["Once upon a time", "The dog"]
        r = self.complete(prompt=prompts, n=2, max_tokens=12)
        self.assertEqual([c.index for c in r.choices], [0, 1, 2, 3])
        for p, prompt in enumerate(prompts):
            alone = self.complete(prompt=prompt, max_tokens=12).choices[0].text
            self.assertEqual(r.choices[2 * p].text, alone)
            self.assertEqual(r.choices[2 * p + 1].text, alone)  # greedy: both samples agree

    def test_echo(self):
        r = self.complete(echo=True, max_tokens=8)
        plain = self.complete(max_tokens=8)
        self.assertEqual(r.choices[0].text, PROMPT + plain.choices[0].text)

    def test_stop_string(self):
        text = self.complete(max_tokens=40).choices[0].text
        words = [w for w in text.split() if len(w) >= 3]
        self.assertTrue(words, text)
        stop = words[min(2, len(words) - 1)]
        for stream in (False, True):
            r = self.complete(max_tokens=40, stop=[stop], stream=stream)
            if stream:
                chunks = list(r)
                got = "".join(c.choices[0].text for c in chunks)
                finish = chunks[-1].choices[0].finish_reason
            else:
                got, finish = r.choices[0].text, r.choices[0].finish_reason
            self.assertNotIn(stop, got)
            self.assertEqual(got, text[:text.index(stop)])
            self.assertEqual(finish, "stop")

    def test_errors_reach_the_client_as_exceptions(self):
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="nope", prompt="x", max_tokens=2)
        with self.assertRaises(openai.BadRequestError):
            self.complete(n=100)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
