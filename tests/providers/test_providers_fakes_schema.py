"""The fakes refuse body fields their provider's page does not document, so a provider that
strays from the documented protocol fails its wire tests instead of passing silently."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes import TEST_KEY as KEY

CASES = [
    ("fal", "/fal-ai/z-image/turbo/lora", "Key", {"prompt": "x", "negative_prompt": "y"}, "negative_prompt"),
    ("novita", "/v3/async/z-image-turbo-lora", "Bearer",
     {"prompt": "x", "size": "512*512", "enable_base64_output": True}, "enable_base64_output"),
    ("novita", "/v3/async/z-image-turbo", "Bearer", {"prompt": "x", "size": "512*512", "loras": []}, "loras"),
    ("highway", "/v3/async/z-image-turbo-lora", "Bearer", {"prompt": "x", "steps": 8}, "steps"),
    ("aimlapi", "/v1/images/generations", "Bearer",
     {"model": "alibaba/z-image-turbo-lora", "prompt": "x", "sync_mode": True}, "sync_mode"),
]


@pytest.mark.parametrize(("protocol", "path", "scheme", "body", "field"), CASES)
async def test_undocumented_field_is_refused(fake_factory, protocol, path, scheme, body, field):
    fake = fake_factory(protocol)
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}{path}", json=body, headers={"Authorization": f"{scheme} {KEY}"})
    assert 400 <= answer.status_code < 500 and field in answer.text
    # and the same body without it is accepted
    del body[field]
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.url}{path}", json=body, headers={"Authorization": f"{scheme} {KEY}"})
    assert answer.status_code == 200, answer.text
