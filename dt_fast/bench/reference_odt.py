"""The official Online Decision Transformer loop (facebookresearch/online-dt, Zheng, Zhang and Grover, ICML 2022),
written faithfully once: the baseline of every online fine-tuning benchmark.

One online iteration of the official main.py (`Experiment.online_tuning`): `vec_evaluate_episode_rtg` collects one
episode in each of N vector envs with sampled actions (a forward over a padded window of the growing history per
env step, `get_predictions`), the episodes go into the `ReplayBuffer` (a list of trajectory dicts, FIFO slots), a
new `create_dataloader` (`TransformSamplingSubTraj` + torch DataLoader) is built over the buffer, and
`SequenceTrainer.train_iteration` runs U updates of `train_step_stochastic` (LAMB on the policy, Adam on the
log-temperature). The code keeps the official structure, names and numerics (evaluation.py, data.py,
replay_buffer.py, trainer.py, lamb.py, the model's head and `get_predictions`, main.py's loss_fn and
_augment_trajectories); what changes, and why:

- The model is transformers' DecisionTransformerModel (dt_fast's checkpoint layout) with ODT's head in place of
  `predict_action`: DiagGaussianActor (mu and log_std Linear layers, log-std squashed into [-5, 2]) giving a
  SquashedNormal. ODT's own model runs the same GPT-2 blocks over the same 3K tokens but adds no position
  embedding, and at its default `ordering=0` no timestep embedding; the transformers layout lets a dt_fast
  checkpoint load into the reference (`from_pretrained`), so both sides run the same policy.
- The envs are a gymnasium SyncVectorEnv with same-step autoreset (what SB3's SubprocVecEnv does). ODT uses
  SubprocVecEnv: one process per env, which on the 2-core machines this is measured on would fight the model for
  the two cores (and 64 processes for 2 cores is not what anyone would run).
- The DataLoader's workers: ODT's 24 become a parameter (`num_workers`, default 0: the batches are made in the
  training process); with 2 cores shared with the updates, extra workers only add process start-up per iteration.
- Evaluation every 10 iterations, logging and the per-iteration torch.save of ODT's loop are left out: an
  iteration here is collection plus updates, what the benchmark compares.

Entry points for benchmarks: `Experiment` (settings: envs per iteration, updates, batch, K, model size), then
`time_collection` (env steps per second of one collection over the N envs) and `time_online_iteration` (wall time
of one collection + U updates).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import distributions as pyd
from torch.optim import Optimizer
from transformers import DecisionTransformerConfig, DecisionTransformerModel

MAX_EPISODE_LEN = 1000
REWARD_SCALE = 0.001  # main.py: 0.001 for the gym tasks (1.0 for antmaze)


# decision_transformer/models/decision_transformer.py: the stochastic head


class TanhTransform(pyd.transforms.Transform):
    domain = pyd.constraints.real
    codomain = pyd.constraints.interval(-1.0, 1.0)
    bijective = True
    sign = +1

    def __init__(self, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)

    @staticmethod
    def atanh(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.log1p() - (-x).log1p())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TanhTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.tanh()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.atanh(y)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))


class SquashedNormal(pyd.transformed_distribution.TransformedDistribution):
    """ODT's tanh-squashed normal, (batch, context, act_dim) independent univariate distributions."""

    def __init__(self, loc: torch.Tensor, std: torch.Tensor) -> None:
        self.loc = loc
        self.std = std
        self.base_dist = pyd.Normal(loc, std)
        super().__init__(self.base_dist, [TanhTransform()])

    @property
    def mean(self) -> torch.Tensor:
        mu = self.loc
        for tr in self.transforms:
            mu = tr(mu)
        return mu

    def entropy(self, N: int = 1) -> torch.Tensor:
        # sample from the distribution and then compute the empirical entropy
        x = self.rsample((N,))
        log_p = self.log_prob(x)
        return -log_p.mean(axis=0).sum(axis=2)  # (batch_size, context_len)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x).sum(axis=2)  # (batch_size, context_len)


class DiagGaussianActor(nn.Module):
    """ODT's head: mu and log_std Linear layers, the log-std squashed into log_std_bounds."""

    def __init__(self, hidden_dim: int, act_dim: int, log_std_bounds: tuple[float, float] = (-5.0, 2.0)) -> None:
        super().__init__()
        self.mu = torch.nn.Linear(hidden_dim, act_dim)
        self.log_std = torch.nn.Linear(hidden_dim, act_dim)
        self.log_std_bounds = log_std_bounds

        def weight_init(m: nn.Module) -> None:
            if isinstance(m, torch.nn.Linear):
                nn.init.orthogonal_(m.weight.data)
                if hasattr(m.bias, "data"):
                    m.bias.data.fill_(0.0)

        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> SquashedNormal:
        mu, log_std = self.mu(obs), self.log_std(obs)
        log_std = torch.tanh(log_std)
        log_std_min, log_std_max = self.log_std_bounds
        log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (log_std + 1.0)
        std = log_std.exp()
        return SquashedNormal(mu, std)


class ODTModel(DecisionTransformerModel):
    """transformers' DecisionTransformerModel with ODT's stochastic head, temperature and `get_predictions`."""

    def __init__(
        self,
        config: DecisionTransformerConfig,
        action_range: tuple[float, float],
        max_length: int,
        eval_context_length: int,
        init_temperature: float = 0.1,
        target_entropy: float | None = None,
    ) -> None:
        super().__init__(config)
        self.predict_action = DiagGaussianActor(config.hidden_size, config.act_dim)
        self.state_dim, self.act_dim = config.state_dim, config.act_dim
        self.max_length, self.eval_context_length, self.action_range = max_length, eval_context_length, action_range
        self.log_temperature = torch.tensor(np.log(init_temperature))
        self.log_temperature.requires_grad = True
        self.target_entropy = target_entropy

    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def get_predictions(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        num_envs: int = 1,
    ) -> tuple:
        """ODT's get_predictions: the last eval_context_length steps, left-padded with zeros to max_length."""
        states = states.reshape(num_envs, -1, self.state_dim)
        actions = actions.reshape(num_envs, -1, self.act_dim)
        returns_to_go = returns_to_go.reshape(num_envs, -1, 1)
        timesteps = timesteps.reshape(num_envs, -1)

        states = states[:, -self.eval_context_length :]
        actions = actions[:, -self.eval_context_length :]
        returns_to_go = returns_to_go[:, -self.eval_context_length :]
        timesteps = timesteps[:, -self.eval_context_length :]

        # pad all tokens to sequence length
        padding_mask = torch.cat([torch.zeros(self.max_length - states.shape[1]), torch.ones(states.shape[1])])
        padding_mask = padding_mask.to(dtype=torch.long, device=states.device).reshape(1, -1)
        padding_mask = padding_mask.repeat((num_envs, 1))
        pad = self.max_length - states.shape[1]
        states = torch.cat(
            [torch.zeros((states.shape[0], pad, self.state_dim), device=states.device), states], dim=1
        ).to(dtype=torch.float32)
        actions = torch.cat(
            [torch.zeros((actions.shape[0], pad, self.act_dim), device=actions.device), actions], dim=1
        ).to(dtype=torch.float32)
        returns_to_go = torch.cat(
            [torch.zeros((returns_to_go.shape[0], pad, 1), device=returns_to_go.device), returns_to_go], dim=1
        ).to(dtype=torch.float32)
        timesteps = torch.cat([torch.zeros((timesteps.shape[0], pad), device=timesteps.device), timesteps], dim=1).to(
            dtype=torch.long
        )

        state_preds, action_preds, return_preds = self.forward(
            states=states,
            actions=actions,
            rewards=None,
            returns_to_go=returns_to_go,
            timesteps=timesteps,
            attention_mask=padding_mask,
            return_dict=False,
        )
        return state_preds[:, -1], action_preds, return_preds[:, -1]


def from_pretrained(
    path: str | Path,
    action_range: tuple[float, float],
    max_length: int,
    eval_context_length: int,
    target_entropy: float,
) -> ODTModel:
    """An ODTModel with the weights of a dt_fast stochastic checkpoint directory (transformers' layout; the action
    head's Linear is ODT's mu, dt_fast's log-std head ODT's log_std)."""
    from safetensors.torch import load_file

    config = DecisionTransformerConfig.from_pretrained(path)
    model = ODTModel(config, action_range, max_length, eval_context_length, target_entropy=target_entropy)
    rename = {"predict_action.0.": "predict_action.mu.", "predict_action_log_std.": "predict_action.log_std."}
    state = {}
    for key, value in load_file(str(Path(path) / "model.safetensors")).items():
        for old, new in rename.items():
            key = new + key[len(old) :] if key.startswith(old) else key
        state[key] = value
    model.load_state_dict(state)
    return model


# evaluation.py


@torch.no_grad()
def vec_evaluate_episode_rtg(
    vec_env: Any,
    state_dim: int,
    act_dim: int,
    model: ODTModel,
    target_return: list,
    max_ep_len: int = 1000,
    reward_scale: float = 0.001,
    state_mean: Any = 0.0,
    state_std: Any = 1.0,
    device: str = "cpu",
    mode: str = "normal",
    use_mean: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One episode in each env of `vec_env`, every env stepped until the last one ends; (returns, lengths, trajs)."""
    assert len(target_return) == vec_env.num_envs

    model.eval()
    model.to(device=device)

    state_mean = torch.from_numpy(state_mean).to(device=device)
    state_std = torch.from_numpy(state_std).to(device=device)

    num_envs = vec_env.num_envs
    state, _ = vec_env.reset()

    # we keep all the histories on the device
    # note that the latest action and reward will be "padding"
    states = (torch.from_numpy(state).reshape(num_envs, state_dim).to(device=device, dtype=torch.float32)).reshape(
        num_envs, -1, state_dim
    )
    actions = torch.zeros(0, device=device, dtype=torch.float32)
    rewards = torch.zeros(0, device=device, dtype=torch.float32)

    ep_return = target_return
    target_return = torch.tensor(ep_return, device=device, dtype=torch.float32).reshape(num_envs, -1, 1)
    timesteps = torch.tensor([0] * num_envs, device=device, dtype=torch.long).reshape(num_envs, -1)

    episode_return = np.zeros((num_envs, 1)).astype(float)
    episode_length = np.full(num_envs, np.inf)

    unfinished = np.ones(num_envs).astype(bool)
    for t in range(max_ep_len):
        # add padding
        actions = torch.cat(
            [actions, torch.zeros((num_envs, act_dim), device=device).reshape(num_envs, -1, act_dim)], dim=1
        )
        rewards = torch.cat([rewards, torch.zeros((num_envs, 1), device=device).reshape(num_envs, -1, 1)], dim=1)

        state_pred, action_dist, reward_pred = model.get_predictions(
            (states.to(dtype=torch.float32) - state_mean) / state_std,
            actions.to(dtype=torch.float32),
            rewards.to(dtype=torch.float32),
            target_return.to(dtype=torch.float32),
            timesteps.to(dtype=torch.long),
            num_envs=num_envs,
        )
        state_pred = state_pred.detach().cpu().numpy().reshape(num_envs, -1)
        reward_pred = reward_pred.detach().cpu().numpy().reshape(num_envs)

        # the return action is a SquashNormal distribution
        action = action_dist.sample().reshape(num_envs, -1, act_dim)[:, -1]
        if use_mean:
            action = action_dist.mean.reshape(num_envs, -1, act_dim)[:, -1]
        action = action.clamp(*model.action_range)

        state, reward, terminated, truncated, _ = vec_env.step(action.detach().cpu().numpy())
        done = terminated | truncated

        # finished envs are reset by the vector env: `unfinished` tracks each env's first episode
        episode_return[unfinished] += reward[unfinished].reshape(-1, 1)

        actions[:, -1] = action
        state = torch.from_numpy(state).to(device=device).reshape(num_envs, -1, state_dim)
        states = torch.cat([states, state], dim=1)
        reward = torch.from_numpy(reward).to(device=device).reshape(num_envs, 1)
        rewards[:, -1] = reward

        if mode != "delayed":
            pred_return = target_return[:, -1] - (reward * reward_scale)
        else:
            pred_return = target_return[:, -1]
        target_return = torch.cat([target_return, pred_return.reshape(num_envs, -1, 1)], dim=1)

        timesteps = torch.cat(
            [timesteps, torch.ones((num_envs, 1), device=device, dtype=torch.long).reshape(num_envs, 1) * (t + 1)],
            dim=1,
        )

        if t == max_ep_len - 1:
            done = np.ones(done.shape).astype(bool)

        if np.any(done):
            ind = np.where(done)[0]
            unfinished[ind] = False
            episode_length[ind] = np.minimum(episode_length[ind], t + 1)

        if not np.any(unfinished):
            break

    trajectories = []
    for ii in range(num_envs):
        ep_len = episode_length[ii].astype(int)
        terminals = np.zeros(ep_len)
        terminals[-1] = 1
        traj = {
            "observations": states[ii].detach().cpu().numpy()[:ep_len],
            "actions": actions[ii].detach().cpu().numpy()[:ep_len],
            "rewards": rewards[ii].detach().cpu().numpy()[:ep_len],
            "terminals": terminals,
        }
        trajectories.append(traj)

    return episode_return.reshape(num_envs), episode_length.reshape(num_envs), trajectories


# replay_buffer.py


class ReplayBuffer:
    """ODT's replay buffer: the top `capacity` offline trajectories by return, then FIFO slots."""

    def __init__(self, capacity: int, trajectories: list[dict]) -> None:
        self.capacity = capacity
        if len(trajectories) <= self.capacity:
            self.trajectories = trajectories
        else:
            returns = [traj["rewards"].sum() for traj in trajectories]
            sorted_inds = np.argsort(returns)  # lowest to highest
            self.trajectories = [trajectories[ii] for ii in sorted_inds[-self.capacity :]]
        self.start_idx = 0

    def __len__(self) -> int:
        return len(self.trajectories)

    def add_new_trajs(self, new_trajs: list[dict]) -> None:
        if len(self.trajectories) < self.capacity:
            self.trajectories.extend(new_trajs)
            self.trajectories = self.trajectories[-self.capacity :]
        else:
            self.trajectories[self.start_idx : self.start_idx + len(new_trajs)] = new_trajs
            self.start_idx = (self.start_idx + len(new_trajs)) % self.capacity
        assert len(self.trajectories) <= self.capacity


# data.py


class SubTrajectory(torch.utils.data.Dataset):
    def __init__(self, trajectories: list[dict], sampling_ind: np.ndarray, transform: Any = None) -> None:
        super().__init__()
        self.sampling_ind = sampling_ind
        self.trajs = trajectories
        self.transform = transform

    def __getitem__(self, index: int) -> Any:
        traj = self.trajs[self.sampling_ind[index]]
        if self.transform:
            return self.transform(traj)
        return traj

    def __len__(self) -> int:
        return len(self.sampling_ind)


class TransformSamplingSubTraj:
    """One window of max_len steps from a trajectory: start uniform in it, cut at its end, left-padded."""

    def __init__(
        self,
        max_len: int,
        state_dim: int,
        act_dim: int,
        state_mean: np.ndarray,
        state_std: np.ndarray,
        reward_scale: float,
        action_range: tuple[float, float],
    ) -> None:
        self.max_len = max_len
        self.state_dim = state_dim
        self.act_dim = act_dim
        self.state_mean = state_mean
        self.state_std = state_std
        self.reward_scale = reward_scale
        # actions of exactly +-1 would give NaN log-likelihoods: they are clamped into the action range
        self.action_range = action_range

    def __call__(self, traj: dict) -> tuple[torch.Tensor, ...]:
        si = random.randint(0, traj["rewards"].shape[0] - 1)

        # get sequences from dataset
        ss = traj["observations"][si : si + self.max_len].reshape(-1, self.state_dim)
        aa = traj["actions"][si : si + self.max_len].reshape(-1, self.act_dim)
        rr = traj["rewards"][si : si + self.max_len].reshape(-1, 1)
        if "terminals" in traj:
            dd = traj["terminals"][si : si + self.max_len]
        else:
            dd = traj["dones"][si : si + self.max_len]

        # get the total length of a trajectory
        tlen = ss.shape[0]

        timesteps = np.arange(si, si + tlen)
        ordering = np.arange(tlen)
        ordering[timesteps >= MAX_EPISODE_LEN] = -1
        ordering[ordering == -1] = ordering.max()
        timesteps[timesteps >= MAX_EPISODE_LEN] = MAX_EPISODE_LEN - 1  # padding cutoff

        rtg = discount_cumsum(traj["rewards"][si:], gamma=1.0)[: tlen + 1].reshape(-1, 1)
        if rtg.shape[0] <= tlen:
            rtg = np.concatenate([rtg, np.zeros((1, 1))])

        # padding and state + reward normalization
        act_len = aa.shape[0]
        if tlen != act_len:
            raise ValueError

        ss = np.concatenate([np.zeros((self.max_len - tlen, self.state_dim)), ss])
        ss = (ss - self.state_mean) / self.state_std

        aa = np.concatenate([np.zeros((self.max_len - tlen, self.act_dim)), aa])
        rr = np.concatenate([np.zeros((self.max_len - tlen, 1)), rr])
        dd = np.concatenate([np.ones(self.max_len - tlen) * 2, dd])
        rtg = np.concatenate([np.zeros((self.max_len - tlen, 1)), rtg]) * self.reward_scale
        timesteps = np.concatenate([np.zeros(self.max_len - tlen), timesteps])
        ordering = np.concatenate([np.zeros(self.max_len - tlen), ordering])
        padding_mask = np.concatenate([np.zeros(self.max_len - tlen), np.ones(tlen)])

        ss = torch.from_numpy(ss).to(dtype=torch.float32)
        aa = torch.from_numpy(aa).to(dtype=torch.float32).clamp(*self.action_range)
        rr = torch.from_numpy(rr).to(dtype=torch.float32)
        dd = torch.from_numpy(dd).to(dtype=torch.long)
        rtg = torch.from_numpy(rtg).to(dtype=torch.float32)
        timesteps = torch.from_numpy(timesteps).to(dtype=torch.long)
        ordering = torch.from_numpy(ordering).to(dtype=torch.long)
        padding_mask = torch.from_numpy(padding_mask)

        return ss, aa, rr, dd, rtg, timesteps, ordering, padding_mask


def create_dataloader(
    trajectories: list[dict],
    num_iters: int,
    batch_size: int,
    max_len: int,
    state_dim: int,
    act_dim: int,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    reward_scale: float,
    action_range: tuple[float, float],
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader of num_iters batches of windows, trajectories drawn in proportion to their length."""
    # total number of sub-trajectories you need to sample
    sample_size = batch_size * num_iters
    sampling_ind = sample_trajs(trajectories, sample_size)
    transform = TransformSamplingSubTraj(
        max_len=max_len,
        state_dim=state_dim,
        act_dim=act_dim,
        state_mean=state_mean,
        state_std=state_std,
        reward_scale=reward_scale,
        action_range=action_range,
    )
    subset = SubTrajectory(trajectories, sampling_ind=sampling_ind, transform=transform)
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=num_workers, shuffle=False)


def discount_cumsum(x: np.ndarray, gamma: float) -> np.ndarray:
    ret = np.zeros_like(x)
    ret[-1] = x[-1]
    for t in reversed(range(x.shape[0] - 1)):
        ret[t] = x[t] + gamma * ret[t + 1]
    return ret


def sample_trajs(trajectories: list[dict], sample_size: int) -> np.ndarray:
    traj_lens = np.array([len(traj["observations"]) for traj in trajectories])
    p_sample = traj_lens / np.sum(traj_lens)
    return np.random.choice(np.arange(len(trajectories)), size=sample_size, replace=True, p=p_sample)


# lamb.py (Ross Wightman's PyTorch LAMB, NVIDIA FusedLAMB behaviour), without its XLA and closure plumbing


class Lamb(Optimizer):
    """LAMB: Adam moments, then the update scaled per parameter by ||p|| / ||update|| (the trust ratio), after a
    global gradient-norm clip at max_grad_norm."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        trust_clip: bool = False,
        always_adapt: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            bias_correction=bias_correction,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self) -> None:
        device = self.param_groups[0]["params"][0].device
        one_tensor = torch.tensor(1.0, device=device)
        global_grad_norm = torch.zeros(1, device=device)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                global_grad_norm.add_(p.grad.pow(2).sum())
        global_grad_norm = torch.sqrt(global_grad_norm)
        max_grad_norm = torch.tensor(self.defaults["max_grad_norm"], device=device)
        clip_global_grad_norm = torch.where(
            global_grad_norm > max_grad_norm, global_grad_norm / max_grad_norm, one_tensor
        )

        for group in self.param_groups:
            bias_correction = 1 if group["bias_correction"] else 0
            beta1, beta2 = group["betas"]
            grad_averaging = 1 if group["grad_averaging"] else 0
            beta3 = 1 - beta1 if grad_averaging else 1.0
            # assume same step across group now to simplify things
            group["step"] = group.get("step", 0) + 1
            if bias_correction:
                bias_correction1 = 1 - beta1 ** group["step"]
                bias_correction2 = 1 - beta2 ** group["step"]
            else:
                bias_correction1, bias_correction2 = 1.0, 1.0

            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.div_(clip_global_grad_norm)
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=beta3)  # m_t
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t

                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
                update = (exp_avg / bias_correction1).div_(denom)

                weight_decay = group["weight_decay"]
                if weight_decay != 0:
                    update.add_(p, alpha=weight_decay)

                if weight_decay != 0 or group["always_adapt"]:
                    # layer-wise LR adaptation
                    w_norm = p.norm(2.0)
                    g_norm = update.norm(2.0)
                    trust_ratio = torch.where(
                        w_norm > 0, torch.where(g_norm > 0, w_norm / g_norm, one_tensor), one_tensor
                    )
                    if group["trust_clip"]:
                        trust_ratio = torch.minimum(trust_ratio, one_tensor)
                    update.mul_(trust_ratio)

                p.add_(update, alpha=-group["lr"])


# trainer.py and main.py's loss_fn


def loss_fn(
    a_hat_dist: SquashedNormal, a: torch.Tensor, attention_mask: torch.Tensor, entropy_reg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # a_hat is a SquashedNormal Distribution
    log_likelihood = a_hat_dist.log_likelihood(a)[attention_mask > 0].mean()
    entropy = a_hat_dist.entropy().mean()
    loss = -(log_likelihood + entropy_reg * entropy)
    return loss, -log_likelihood, entropy


class SequenceTrainer:
    def __init__(
        self,
        model: ODTModel,
        optimizer: Optimizer,
        log_temperature_optimizer: Optimizer,
        scheduler: Any = None,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.log_temperature_optimizer = log_temperature_optimizer
        self.scheduler = scheduler
        self.device = device

    def train_iteration(self, loss_fn: Any, dataloader: torch.utils.data.DataLoader) -> dict[str, float]:
        losses, nlls, entropies = [], [], []
        logs = {}
        train_start = time.time()
        self.model.train()
        for _, trajs in enumerate(dataloader):
            loss, nll, entropy = self.train_step_stochastic(loss_fn, trajs)
            losses.append(loss)
            nlls.append(nll)
            entropies.append(entropy)
        logs["time/training"] = time.time() - train_start
        logs["training/train_loss_mean"] = np.mean(losses)
        logs["training/train_loss_std"] = np.std(losses)
        logs["training/nll"] = nlls[-1]
        logs["training/entropy"] = entropies[-1]
        logs["training/temp_value"] = self.model.temperature().detach().cpu().item()
        return logs

    def train_step_stochastic(self, loss_fn: Any, trajs: tuple[torch.Tensor, ...]) -> tuple[float, float, float]:
        states, actions, rewards, dones, rtg, timesteps, ordering, padding_mask = trajs
        states = states.to(self.device)
        actions = actions.to(self.device)
        rewards = rewards.to(self.device)
        dones = dones.to(self.device)
        rtg = rtg.to(self.device)
        timesteps = timesteps.to(self.device)
        ordering = ordering.to(self.device)
        padding_mask = padding_mask.to(self.device)

        action_target = torch.clone(actions)

        _, action_preds, _ = self.model.forward(
            states=states,
            actions=actions,
            rewards=rewards,
            returns_to_go=rtg[:, :-1],
            timesteps=timesteps,
            attention_mask=padding_mask,
            return_dict=False,
        )

        loss, nll, entropy = loss_fn(
            action_preds,  # a_hat_dist
            action_target,
            padding_mask,
            self.model.temperature().detach(),  # no gradient taken here
        )
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.25)
        self.optimizer.step()

        self.log_temperature_optimizer.zero_grad()
        temperature_loss = self.model.temperature() * (entropy - self.model.target_entropy).detach()
        temperature_loss.backward()
        self.log_temperature_optimizer.step()

        if self.scheduler is not None:
            self.scheduler.step()

        return loss.detach().cpu().item(), nll.detach().cpu().item(), entropy.detach().cpu().item()


# main.py: the experiment's set-up and one online iteration


def make_vec_env(env_id: str, num_envs: int, seed: int) -> Any:
    """`num_envs` gymnasium envs stepped in this process, reset on the step that ends an episode (SB3's
    semantics), env i seeded with seed + i (ODT's online envs: get_env_builder(i + 100))."""
    import gymnasium as gym

    vec_env = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    vec_env.reset(seed=seed)
    vec_env.action_space.seed(seed)
    return vec_env


def load_trajectories(trajectories: list[dict]) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """main.py's _load_dataset on a list of trajectory dicts: (the trajectories it keeps, state mean, state std)."""
    states, traj_lens, returns = [], [], []
    for path in trajectories:
        states.append(path["observations"])
        traj_lens.append(len(path["observations"]))
        returns.append(path["rewards"].sum())
    traj_lens, returns = np.array(traj_lens), np.array(returns)

    # used for input normalization
    states = np.concatenate(states, axis=0)
    state_mean, state_std = np.mean(states, axis=0), np.std(states, axis=0) + 1e-6
    num_timesteps = sum(traj_lens)

    sorted_inds = np.argsort(returns)  # lowest to highest
    num_trajectories = 1
    timesteps = traj_lens[sorted_inds[-1]]
    ind = len(trajectories) - 2
    while ind >= 0 and timesteps + traj_lens[sorted_inds[ind]] < num_timesteps:
        timesteps += traj_lens[sorted_inds[ind]]
        num_trajectories += 1
        ind -= 1
    sorted_inds = sorted_inds[-num_trajectories:]
    return [trajectories[ii] for ii in sorted_inds], state_mean, state_std


class Experiment:
    """The state of ODT's online fine-tuning at given settings (main.py's Experiment, without its logger).

    Args:
        trajectories: the offline dataset, dicts of numpy arrays "observations", "actions", "rewards", "terminals".
        env_id: a gymnasium id (Hopper-v4). num_envs: ODT's num_online_rollouts, episodes per iteration.
        hidden_size, n_layer, n_head, K, eval_context_length, batch_size: ODT's embed_dim, n_layer, n_head, K,
            eval_context_length, batch_size. replay_size: the buffer's capacity in trajectories.
        checkpoint: a dt_fast stochastic checkpoint directory to start from (else a fresh model).
        num_workers: the DataLoader's worker processes (ODT: 24). max_ep_len: the collection's episode cap (ODT:
            1000; smaller in tests). learning_rate, weight_decay, warmup_steps, init_temperature: ODT's defaults.
    """

    def __init__(
        self,
        trajectories: list[dict],
        env_id: str,
        num_envs: int,
        hidden_size: int = 128,
        n_layer: int = 3,
        n_head: int = 1,
        K: int = 20,
        eval_context_length: int = 5,
        batch_size: int = 64,
        replay_size: int = 1000,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        num_workers: int = 0,
        max_ep_len: int = MAX_EPISODE_LEN,
        learning_rate: float = 1e-4,
        weight_decay: float = 5e-4,
        warmup_steps: int = 10000,
        init_temperature: float = 0.1,
        dropout: float = 0.1,
        device: str = "cpu",
    ) -> None:
        random.seed(seed)  # utils.set_seed_everywhere
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.env_id, self.batch_size, self.K, self.num_workers = env_id, batch_size, K, num_workers
        self.max_ep_len, self.device = max_ep_len, device
        self.online_envs = make_vec_env(env_id, num_envs, seed + 100)
        self.state_dim = self.online_envs.single_observation_space.shape[0]
        self.act_dim = self.online_envs.single_action_space.shape[0]
        space = self.online_envs.single_action_space
        self.action_range = (float(space.low.min()) + 1e-6, float(space.high.max()) - 1e-6)
        self.offline_trajs, self.state_mean, self.state_std = load_trajectories(trajectories)
        self.replay_buffer = ReplayBuffer(replay_size, self.offline_trajs)
        self.target_entropy = -self.act_dim
        if checkpoint is not None:
            self.model = from_pretrained(checkpoint, self.action_range, K, eval_context_length, self.target_entropy)
        else:
            config = DecisionTransformerConfig(
                state_dim=self.state_dim,
                act_dim=self.act_dim,
                hidden_size=hidden_size,
                max_ep_len=MAX_EPISODE_LEN,
                n_layer=n_layer,
                n_head=n_head,
                n_inner=4 * hidden_size,
                activation_function="relu",
                n_positions=1024,
                resid_pdrop=dropout,
                attn_pdrop=dropout,
            )
            self.model = ODTModel(
                config, self.action_range, K, eval_context_length, init_temperature, self.target_entropy
            )
        self.model = self.model.to(device=device)
        self.optimizer = Lamb(self.model.parameters(), lr=learning_rate, weight_decay=weight_decay, eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda steps: min((steps + 1) / warmup_steps, 1)
        )
        self.log_temperature_optimizer = torch.optim.Adam([self.model.log_temperature], lr=1e-4, betas=[0.9, 0.999])
        self.trainer = SequenceTrainer(
            model=self.model,
            optimizer=self.optimizer,
            log_temperature_optimizer=self.log_temperature_optimizer,
            scheduler=self.scheduler,
            device=device,
        )
        self.total_transitions_sampled = 0

    def augment_trajectories(self, target_explore: float) -> dict[str, float]:
        """main.py's _augment_trajectories: one sampled episode per online env, into the replay buffer."""
        with torch.no_grad():
            target_return = [target_explore * REWARD_SCALE] * self.online_envs.num_envs
            returns, lengths, trajs = vec_evaluate_episode_rtg(
                self.online_envs,
                self.state_dim,
                self.act_dim,
                self.model,
                max_ep_len=self.max_ep_len,
                reward_scale=REWARD_SCALE,
                target_return=target_return,
                mode="normal",
                state_mean=self.state_mean,
                state_std=self.state_std,
                device=self.device,
                use_mean=False,
            )
        self.replay_buffer.add_new_trajs(trajs)
        self.total_transitions_sampled += np.sum(lengths)
        return {
            "aug_traj/return": np.mean(returns),
            "aug_traj/length": np.mean(lengths),
            "aug_traj/max_length": np.max(lengths),
            "aug_traj/transitions": np.sum(lengths),
        }

    def train_iteration(self, num_updates: int) -> dict[str, float]:
        """A new dataloader over the replay buffer, then `num_updates` updates (main.py's online_tuning)."""
        dataloader = create_dataloader(
            trajectories=self.replay_buffer.trajectories,
            num_iters=num_updates,
            batch_size=self.batch_size,
            max_len=self.K,
            state_dim=self.state_dim,
            act_dim=self.act_dim,
            state_mean=self.state_mean,
            state_std=self.state_std,
            reward_scale=REWARD_SCALE,
            action_range=self.action_range,
            num_workers=self.num_workers,
        )
        return self.trainer.train_iteration(loss_fn=loss_fn, dataloader=dataloader)

    def online_iteration(self, num_updates: int, target_explore: float = 7200.0) -> dict[str, float]:
        """One iteration of ODT's online loop: collection, then `num_updates` updates (ODT's online_rtg 7200)."""
        outputs = self.augment_trajectories(target_explore)
        outputs.update(self.train_iteration(num_updates))
        return outputs

    def close(self) -> None:
        self.online_envs.close()


@dataclass
class CollectionTiming:
    """One collection: transitions kept (the episodes' lengths), env steps taken (every env steps until the
    longest episode ends), and the wall time."""

    transitions: int
    env_steps: int
    seconds: float

    @property
    def transitions_per_s(self) -> float:
        return self.transitions / self.seconds

    @property
    def env_steps_per_s(self) -> float:
        return self.env_steps / self.seconds


def time_collection(experiment: Experiment, target_explore: float = 7200.0) -> CollectionTiming:
    """Time one collection (one episode per online env, sampled actions) of the official loop."""
    start = time.perf_counter()
    out = experiment.augment_trajectories(target_explore)
    seconds = time.perf_counter() - start
    num_envs = experiment.online_envs.num_envs
    return CollectionTiming(int(out["aug_traj/transitions"]), int(num_envs * out["aug_traj/max_length"]), seconds)


def time_online_iteration(experiment: Experiment, num_updates: int, target_explore: float = 7200.0) -> dict[str, float]:
    """Wall time of one online iteration of the official loop: {"collect_s", "train_s", "total_s", "transitions",
    "env_steps"} (train_s includes building the iteration's DataLoader; counts as in CollectionTiming)."""
    start = time.perf_counter()
    out = experiment.augment_trajectories(target_explore)
    collected = time.perf_counter()
    experiment.train_iteration(num_updates)
    end = time.perf_counter()
    return {
        "collect_s": collected - start,
        "train_s": end - collected,
        "total_s": end - start,
        "transitions": float(out["aug_traj/transitions"]),
        "env_steps": float(experiment.online_envs.num_envs * out["aug_traj/max_length"]),
    }
