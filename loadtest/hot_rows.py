"""Contention on the hottest rows: every user follows and unfollows the most followed
user and likes and unlikes one post, so each write queues on the same profile or post
row lock (the counters are exact, so those rows are locked by every such write).

    python -m loadtest.bench --locustfile loadtest/hot_rows.py --skip-baselines ...

Same options and seed file as ``loadtest/locustfile.py``; the endpoints carry the same
names, so the report's write targets judge them.
"""
from __future__ import annotations

import random

from locust import FastHttpUser, task

from loadtest.locustfile import _authorisation, _host_turn, _hosts, _option, _seed
from loadtest.seeddata import API


class HotRowUser(FastHttpUser):
    def __init__(self, environment):
        hosts = _hosts(environment, "rest_hosts")
        self.host = hosts[next(_host_turn) % len(hosts)]
        super().__init__(environment)
        self.seed = _seed(environment)
        self.rng = random.Random()
        self.headers: dict[str, str] = {}
        self.following = False
        self.liked = False

    def wait_time(self):
        mean = _option(self.environment, "rest_wait", 1.0)
        return self.rng.uniform(0.5 * mean, 1.5 * mean)

    def on_start(self):
        index = self.seed.claim("rest")
        self.headers = _authorisation(self, self.seed, index)
        popular = [i for i in self.seed.popular[:2] if i != index] or [0 if index else 1]
        self.target = self.seed.users[popular[0]]["id"]
        self.post_id = self.seed.post_ids[0]

    @task
    def toggle_follow(self):
        method = self.client.delete if self.following else self.client.put
        method(f"{API}/users/{self.target}/follow", name=f"{API}/users/{{id}}/follow",
               headers=self.headers)
        self.following = not self.following

    @task
    def toggle_like(self):
        method = self.client.delete if self.liked else self.client.put
        method(f"{API}/posts/{self.post_id}/like", name=f"{API}/posts/{{id}}/like",
               headers=self.headers)
        self.liked = not self.liked
