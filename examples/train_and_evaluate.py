"""Train a Decision Transformer on a dataset file (or the bundled Hopper data), then evaluate it in batched envs.

    python examples/train_and_evaluate.py --dataset my_data.hdf5 --steps 2000 --out runs/example

Any format dt_fast.load_dataset reads works: D4RL HDF5, .npz, Hugging Face parquet or `save_to_disk`, Minari.
"""

import argparse

import dt_fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="hopper-medium-v4", help="dataset file, or a bundled dataset's name")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--out", default="runs/example", help="run directory (must not hold a run yet)")
    args = parser.parse_args()

    data = dt_fast.load_dataset(args.dataset)
    print(data)
    trainer = dt_fast.Trainer(dt_fast.TrainConfig(dataset=args.dataset, steps=args.steps, out=args.out))
    trainer.run()
    trainer.close()

    result = dt_fast.evaluate(args.out, env=data.env_id, episodes=args.episodes)  # the checkpoint's own target
    print(
        f"return {result.mean:.1f} +- {result.ci95:.1f} (95% interval, {args.episodes} episodes), "
        f"D4RL-normalised {result.normalized_score:.1f}; the dataset's episodes averaged "
        f"{data.episode_returns.mean():.1f}"
    )


if __name__ == "__main__":
    main()
