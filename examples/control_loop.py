"""Run a trained policy in one gymnasium environment, one step at a time: the loop of a real-time controller.

    python examples/control_loop.py runs/example --mode exact

`Policy` keeps the episode's state (normalisation, return-to-go, timesteps, a KV cache): each `act` is one
forward step of the C++ engine, not a recompute of the window.
"""

import argparse
import time

import gymnasium as gym
import numpy as np

import dt_fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint directory written by dt-fast train")
    parser.add_argument("--env", default="Hopper-v4", help="gymnasium environment id")
    parser.add_argument("--mode", default="exact", choices=["exact", "rolling"], help="rolling is O(1) per step")
    parser.add_argument("--seed", type=int, default=0, help="seed of the environment")
    args = parser.parse_args()

    policy = dt_fast.Policy.from_pretrained(args.checkpoint, mode=args.mode)
    env = gym.make(args.env)
    obs, _ = env.reset(seed=args.seed)
    policy.reset()
    reward, total, latencies, done = None, 0.0, [], False
    while not done:
        start = time.perf_counter()
        action = policy.act(obs, reward)  # (act_dim,); reward is the one received for the previous action
        latencies.append(time.perf_counter() - start)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + float(reward), terminated or truncated
    env.close()
    print(
        f"return {total:.1f} over {len(latencies)} steps; Policy.act p50 "
        f"{np.percentile(latencies, 50) * 1e6:.0f} us, p99 {np.percentile(latencies, 99) * 1e6:.0f} us "
        f"({policy.backend} backend, {args.mode} mode)"
    )


if __name__ == "__main__":
    main()
