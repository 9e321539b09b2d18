from f1.collect.plan import episode_id, plan_collection


def _indices(plans):
    return sorted(t.index for p in plans for s in p.slots for t in s)


def test_plan_covers_every_episode_once_and_balances_slots():
    plans = plan_collection(seed=3, total_episodes=23, scene_reset_interval=5, num_workers=2, envs_per_worker=2)
    assert _indices(plans) == list(range(23))
    loads = [len(s) for p in plans for s in p.slots]
    assert max(loads) - min(loads) <= 5, loads
    assert all(p.num_episodes for p in plans)


def test_resume_skips_what_the_store_holds():
    done = {episode_id(3, i) for i in (0, 1, 2, 7, 19)}
    plans = plan_collection(
        seed=3, total_episodes=20, scene_reset_interval=5, num_workers=2, envs_per_worker=2, done_ids=done
    )
    assert _indices(plans) == [i for i in range(20) if i not in (0, 1, 2, 7, 19)]


def test_nodes_split_the_run_without_overlap():
    kwargs = dict(seed=0, total_episodes=40, scene_reset_interval=4, num_workers=2, envs_per_worker=1)
    node0 = _indices(plan_collection(node_rank=0, num_nodes=2, **kwargs))
    node1 = _indices(plan_collection(node_rank=1, num_nodes=2, **kwargs))
    assert not set(node0) & set(node1)
    assert sorted(node0 + node1) == list(range(40))


def test_episode_identity_is_a_pure_function_of_seed_and_index():
    a = plan_collection(seed=1, total_episodes=6, scene_reset_interval=2, num_workers=1, envs_per_worker=3)
    b = plan_collection(seed=1, total_episodes=6, scene_reset_interval=2, num_workers=3, envs_per_worker=1)
    by_index = lambda plans: {t.index: (t.episode_id, t.seed, t.scene_seed) for p in plans for s in p.slots for t in s}
    assert by_index(a) == by_index(b)
    # episodes of one scene block share its scene seed; ids have no dots
    tasks = by_index(a)
    assert tasks[0][2] == tasks[1][2] != tasks[2][2]
    assert all("." not in eid for eid, _, _ in tasks.values())
    other = plan_collection(seed=2, total_episodes=6, scene_reset_interval=2, num_workers=1, envs_per_worker=1)
    assert not set(by_index(other)[i][0] for i in range(6)) & set(tasks[i][0] for i in range(6))
