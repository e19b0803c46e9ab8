from tests.observability.canary_run import CanaryRun


def test_smoke(canary_run: CanaryRun) -> None:
    from collections import Counter
    print(Counter((e.endpoint, e.status) for e in canary_run.exchanges))
    print(Counter((r["allowed"], r.get("status", {}).get("code")) for _, r in canary_run.reviews()))
    print(canary_run.stderr[:3000])
    print(canary_run.exit_code)
    for l in canary_run.stdout.splitlines()[:5]: print(l)
    print(len(canary_run.stdout.splitlines()))
    import collections
    print(collections.Counter(__import__('json').loads(l)['msg'] for l in canary_run.stdout.splitlines()))
    assert 0
