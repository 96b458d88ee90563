async def test_counter_through_dev(dev_factory, http):
    dev = dev_factory("examples.counter")
    for expected in (1, 2, 3):
        async with http.post(f"{dev.url}/Counter/smoke/increment") as r:
            assert r.status == 200
            assert (await r.json()) == {"value": expected}
    async with http.get(f"{dev.url}/Nope/x") as r:
        assert r.status == 404
        assert "Nope" in (await r.json())["error"]
