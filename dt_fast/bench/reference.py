"""The reference workflow of the Hugging Face blog posts (shared/seeds 001 and 002), written faithfully once.

Every benchmark and every equality test imports its baseline from here: the data collator over a dataset of
trajectory dicts, the TrainableDT loss wrapper for transformers.Trainer, and the `get_action` evaluation loop
that recomputes a window of the last `max_length` steps at batch size 1 for every environment step.
The code keeps the blog's structure and numerics; only the lines lost in the blog's HTML are restored.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import DecisionTransformerModel


class ListDataset:
    """The blog's dataset interface over Python lists: ds[i] is a trajectory dict, ds["observations"] a column."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __getitem__(self, key: int | str) -> dict | list:
        return [row[key] for row in self.rows] if isinstance(key, str) else self.rows[key]

    def __len__(self) -> int:
        return len(self.rows)


class DecisionTransformerGymDataCollator:
    """The blog's collator: samples windows of max_len steps from a dataset of trajectory dicts."""

    return_tensors: str = "pt"
    max_len: int = 20  # subsets of the episode we use for training
    state_dim: int = 17  # size of state space
    act_dim: int = 6  # size of action space
    max_ep_len: int = 1000  # max episode length in the dataset
    scale: float = 1000.0  # normalization of rewards/returns
    state_mean: np.ndarray = None  # to store state means
    state_std: np.ndarray = None  # to store state stds
    p_sample: np.ndarray = None  # a distribution to take account trajectory lengths
    n_traj: int = 0  # to store the number of trajectories in the dataset

    def __init__(self, dataset: Any, max_len: int = 20, max_ep_len: int = 1000, scale: float = 1000.0) -> None:
        self.max_len, self.max_ep_len, self.scale = max_len, max_ep_len, scale
        self.act_dim = len(dataset[0]["actions"][0])
        self.state_dim = len(dataset[0]["observations"][0])
        self.dataset = dataset
        # calculate dataset stats for normalization of states
        states = []
        traj_lens = []
        for obs in dataset["observations"]:
            states.extend(obs)
            traj_lens.append(len(obs))
        self.n_traj = len(traj_lens)
        states = np.vstack(states)
        self.state_mean, self.state_std = np.mean(states, axis=0), np.std(states, axis=0) + 1e-6
        traj_lens = np.array(traj_lens)
        self.p_sample = traj_lens / sum(traj_lens)

    def _discount_cumsum(self, x: np.ndarray, gamma: float) -> np.ndarray:
        discount_cumsum = np.zeros_like(x)
        discount_cumsum[-1] = x[-1]
        for t in reversed(range(x.shape[0] - 1)):
            discount_cumsum[t] = x[t] + gamma * discount_cumsum[t + 1]
        return discount_cumsum

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        batch_size = len(features)
        # this is a bit of a hack to be able to sample of a non-uniform distribution
        batch_inds = np.random.choice(
            np.arange(self.n_traj),
            size=batch_size,
            replace=True,
            p=self.p_sample,  # reweights so we sample according to timesteps
        )
        # a batch of dataset features
        s, a, r, d, rtg, timesteps, mask = [], [], [], [], [], [], []

        for ind in batch_inds:
            # for feature in features:
            feature = self.dataset[int(ind)]
            si = random.randint(0, len(feature["rewards"]) - 1)

            # get sequences from dataset
            s.append(np.array(feature["observations"][si : si + self.max_len]).reshape(1, -1, self.state_dim))
            a.append(np.array(feature["actions"][si : si + self.max_len]).reshape(1, -1, self.act_dim))
            r.append(np.array(feature["rewards"][si : si + self.max_len]).reshape(1, -1, 1))

            d.append(np.array(feature["dones"][si : si + self.max_len]).reshape(1, -1))
            timesteps.append(np.arange(si, si + s[-1].shape[1]).reshape(1, -1))
            timesteps[-1][timesteps[-1] >= self.max_ep_len] = self.max_ep_len - 1  # padding cutoff
            # the blog slices to the window's length here (its own comment asks to recheck a removed "+1"): kept as is
            returns = self._discount_cumsum(np.array(feature["rewards"][si:]), gamma=1.0)
            rtg.append(returns[: s[-1].shape[1]].reshape(1, -1, 1))
            if rtg[-1].shape[1] < s[-1].shape[1]:
                print("if true")
                rtg[-1] = np.concatenate([rtg[-1], np.zeros((1, 1, 1))], axis=1)

            # padding and state + reward normalization
            tlen = s[-1].shape[1]
            s[-1] = np.concatenate([np.zeros((1, self.max_len - tlen, self.state_dim)), s[-1]], axis=1)
            s[-1] = (s[-1] - self.state_mean) / self.state_std
            a[-1] = np.concatenate(
                [np.ones((1, self.max_len - tlen, self.act_dim)) * -10.0, a[-1]],
                axis=1,
            )
            r[-1] = np.concatenate([np.zeros((1, self.max_len - tlen, 1)), r[-1]], axis=1)
            d[-1] = np.concatenate([np.ones((1, self.max_len - tlen)) * 2, d[-1]], axis=1)
            rtg[-1] = np.concatenate([np.zeros((1, self.max_len - tlen, 1)), rtg[-1]], axis=1) / self.scale
            timesteps[-1] = np.concatenate([np.zeros((1, self.max_len - tlen)), timesteps[-1]], axis=1)
            mask.append(np.concatenate([np.zeros((1, self.max_len - tlen)), np.ones((1, tlen))], axis=1))

        s = torch.from_numpy(np.concatenate(s, axis=0)).float()
        a = torch.from_numpy(np.concatenate(a, axis=0)).float()
        r = torch.from_numpy(np.concatenate(r, axis=0)).float()
        d = torch.from_numpy(np.concatenate(d, axis=0))
        rtg = torch.from_numpy(np.concatenate(rtg, axis=0)).float()
        timesteps = torch.from_numpy(np.concatenate(timesteps, axis=0)).long()
        mask = torch.from_numpy(np.concatenate(mask, axis=0)).float()

        return {
            "states": s,
            "actions": a,
            "rewards": r,
            "returns_to_go": rtg,
            "timesteps": timesteps,
            "attention_mask": mask,
        }


class TrainableDT(DecisionTransformerModel):
    """The blog's loss wrapper: masked MSE of the action predictions, for transformers.Trainer."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)

    def forward(self, **kwargs: Any) -> dict[str, torch.Tensor]:
        output = super().forward(**kwargs)
        # add the DT loss
        action_preds = output[1]
        action_targets = kwargs["actions"]
        attention_mask = kwargs["attention_mask"]
        act_dim = action_preds.shape[2]
        action_preds = action_preds.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]
        action_targets = action_targets.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]
        loss = torch.mean((action_preds - action_targets) ** 2)

        return {"loss": loss}

    def original_forward(self, **kwargs: Any) -> Any:
        return super().forward(**kwargs)


def get_action(
    model: DecisionTransformerModel,
    states: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    returns_to_go: torch.Tensor,
    timesteps: torch.Tensor,
    max_length: int = 20,
) -> torch.Tensor:
    """The blog's `get_action`: the action of the last step from a left-padded window of max_length steps."""
    state_dim, act_dim = model.config.state_dim, model.config.act_dim
    # This implementation does not condition on past rewards
    states = states.reshape(1, -1, state_dim)
    actions = actions.reshape(1, -1, act_dim)
    returns_to_go = returns_to_go.reshape(1, -1, 1)
    timesteps = timesteps.reshape(1, -1)
    # The prediction is conditioned on up to 20 previous time-steps
    states = states[:, -max_length:]
    actions = actions[:, -max_length:]
    returns_to_go = returns_to_go[:, -max_length:]
    timesteps = timesteps[:, -max_length:]
    # pad all tokens to sequence length, this is required if we process batches
    padding = max_length - states.shape[1]
    attention_mask = torch.cat([torch.zeros(padding), torch.ones(states.shape[1])])
    attention_mask = attention_mask.to(dtype=torch.long).reshape(1, -1)
    states = torch.cat([torch.zeros((1, padding, state_dim)), states], dim=1).float()
    actions = torch.cat([torch.zeros((1, padding, act_dim)), actions], dim=1).float()
    returns_to_go = torch.cat([torch.zeros((1, padding, 1)), returns_to_go], dim=1).float()
    timesteps = torch.cat([torch.zeros((1, padding), dtype=torch.long), timesteps], dim=1)
    # perform the prediction
    state_preds, action_preds, return_preds = model(
        states=states,
        actions=actions,
        rewards=rewards,
        returns_to_go=returns_to_go,
        timesteps=timesteps,
        attention_mask=attention_mask,
        return_dict=False,
    )
    return action_preds[0, -1]


def rollout(
    model: DecisionTransformerModel,
    env_step: Callable[[np.ndarray], tuple[np.ndarray, float, bool]],
    first_obs: np.ndarray,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    target_return: float,
    scale: float,
    max_ep_len: int,
    max_length: int = 20,
) -> tuple[list[np.ndarray], float]:
    """The blog's evaluation loop for one episode; returns the actions taken and the episode return.

    `target_return` is in environment units (the blog's TARGET_RETURN times `scale`); `env_step(action)` returns
    (observation, reward, done). Timesteps are clipped to max_ep_len - 1 so that long rollouts stay in range.
    """
    state_dim, act_dim = model.config.state_dim, model.config.act_dim
    state_mean_t = torch.from_numpy(np.asarray(state_mean, dtype=np.float64))
    state_std_t = torch.from_numpy(np.asarray(state_std, dtype=np.float64))
    target = torch.tensor(target_return / scale).float().reshape(1, 1)
    states = torch.from_numpy(np.asarray(first_obs)).reshape(1, state_dim).float()
    actions = torch.zeros((0, act_dim)).float()
    rewards = torch.zeros(0).float()
    timesteps = torch.tensor(0).reshape(1, 1).long()
    taken, episode_return = [], 0.0
    for t in range(max_ep_len):
        # add zeros for actions as input for the current time-step
        actions = torch.cat([actions, torch.zeros((1, act_dim))], dim=0)
        rewards = torch.cat([rewards, torch.zeros(1)])
        # predicting the action to take
        with torch.no_grad():
            action = get_action(
                model, (states - state_mean_t) / state_std_t, actions, rewards, target, timesteps, max_length=max_length
            )
        actions[-1] = action
        action = action.detach().numpy()
        taken.append(action)
        # interact with the environment based on this action
        state, reward, done = env_step(action)
        episode_return += float(reward)
        cur_state = torch.from_numpy(np.asarray(state)).reshape(1, state_dim).float()
        states = torch.cat([states, cur_state], dim=0)
        rewards[-1] = reward
        pred_return = target[0, -1] - (reward / scale)
        target = torch.cat([target, pred_return.reshape(1, 1)], dim=1)
        timesteps = torch.cat([timesteps, torch.ones((1, 1)).long() * min(t + 1, max_ep_len - 1)], dim=1)
        if done:
            break
    return taken, episode_return
