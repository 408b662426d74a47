// Python face of the trajectory sampler: the dataset core (a fixed dataset or a replay buffer, whose appends give a
// new core), windows for given draws, the prefetching stream.
#include <memory>
#include <string>
#include <utility>

#include "bindings/bindings.h"
#include "sampler/trajectory_sampler.h"

namespace dt_py {

namespace {

using Core = dt::TrajectorySampler;

void check_rank(const py::array& a, const std::string& name, py::ssize_t ndim) {
  if (a.ndim() != ndim) {
    throw py::value_error(name + " must have " + std::to_string(ndim) + " dimensions, got " + std::to_string(a.ndim()));
  }
}

void check_len(const py::array& a, const std::string& name, py::ssize_t axis, py::ssize_t expected,
               const std::string& what) {
  if (a.shape(axis) != expected) {
    throw py::value_error(name + ".shape[" + std::to_string(axis) + "] = " + std::to_string(a.shape(axis)) +
                          " must equal " + what + " = " + std::to_string(expected));
  }
}

std::shared_ptr<Core> make_core(const py::object& observations_in, const py::object& actions_in,
                                const py::object& rewards_in, const py::object& offsets_in,
                                const py::object& state_mean_in, const py::object& state_std_in, int64_t context_len,
                                int64_t batch_size, double scale, double gamma, int64_t max_ep_len, int64_t capacity) {
  const auto observations = read_array<float>(observations_in, "observations");
  const auto actions = read_array<float>(actions_in, "actions");
  const auto rewards = read_array<float>(rewards_in, "rewards");
  const auto offsets = read_array<int64_t>(offsets_in, "offsets");
  const auto state_mean = read_array<double>(state_mean_in, "state_mean");
  const auto state_std = read_array<double>(state_std_in, "state_std");
  check_rank(observations, "observations", 2);
  check_rank(actions, "actions", 2);
  check_rank(rewards, "rewards", 1);
  check_rank(offsets, "offsets", 1);
  check_rank(state_mean, "state_mean", 1);
  check_rank(state_std, "state_std", 1);
  const py::ssize_t n = observations.shape(0), state_dim = observations.shape(1);
  check_len(actions, "actions", 0, n, "the number of observations");
  check_len(rewards, "rewards", 0, n, "the number of observations");
  check_len(state_mean, "state_mean", 0, state_dim, "state_dim");
  check_len(state_std, "state_std", 0, state_dim, "state_dim");
  const dt::SamplerOptions options{context_len, batch_size, scale, gamma, max_ep_len, capacity};
  py::gil_scoped_release release;
  return std::make_shared<Core>(observations.data(), actions.data(), rewards.data(), n, state_dim, actions.shape(1),
                                offsets.data(), offsets.shape(0), state_mean.data(), state_std.data(), options);
}

// `episodes` of the core as read from Python: observations (or states) [n, S], actions [n, A], rewards [n],
// lengths [E] (values are checked by the core).
struct EpisodeArrays {
  CArray<float> observations, actions, rewards;
  CArray<int64_t> lengths;
  dt::Episodes view() const {
    const int64_t n_steps = observations.shape(0), n_episodes = lengths.shape(0);
    return {observations.data(), actions.data(), rewards.data(), lengths.data(), n_steps, n_episodes};
  }
};

EpisodeArrays read_episodes(const Core& core, const py::object& observations_in, const char* observations_name,
                            const py::object& actions_in, const py::object& rewards_in, const py::object& lengths_in) {
  EpisodeArrays e{read_array<float>(observations_in, observations_name), read_array<float>(actions_in, "actions"),
                  read_array<float>(rewards_in, "rewards"), read_array<int64_t>(lengths_in, "lengths")};
  check_rank(e.observations, observations_name, 2);
  check_rank(e.actions, "actions", 2);
  check_rank(e.rewards, "rewards", 1);
  check_rank(e.lengths, "lengths", 1);
  const py::ssize_t n = e.observations.shape(0);
  check_len(e.observations, observations_name, 1, core.state_dim(), "state_dim");
  check_len(e.actions, "actions", 0, n, std::string("the number of ") + observations_name);
  check_len(e.actions, "actions", 1, core.act_dim(), "act_dim");
  check_len(e.rewards, "rewards", 0, n, std::string("the number of ") + observations_name);
  return e;
}

std::shared_ptr<Core> appended(const Core& core, const py::object& observations, const py::object& actions,
                               const py::object& rewards, const py::object& lengths) {
  const EpisodeArrays e = read_episodes(core, observations, "observations", actions, rewards, lengths);
  py::gil_scoped_release release;
  return core.appended(e.view());
}

std::shared_ptr<Core> restored(const Core& core, const py::object& states, const py::object& actions,
                               const py::object& rewards, const py::object& lengths) {
  const EpisodeArrays e = read_episodes(core, states, "states", actions, rewards, lengths);
  py::gil_scoped_release release;
  return core.restored(e.view());
}

py::tuple episodes(const Core& core) {
  const py::ssize_t n = core.n_steps(), S = core.state_dim(), A = core.act_dim();
  py::array_t<float> states({n, S}), actions({n, A}), rewards(n);
  py::array_t<int64_t> lengths(core.n_episodes());
  core.copy_episodes(states.mutable_data(), actions.mutable_data(), rewards.mutable_data(), lengths.mutable_data());
  return py::make_tuple(states, actions, rewards, lengths);
}

// Owns a batch handed to Python; gives it back to its pool (if any) when the last array viewing it dies.
struct HandedBatch {
  HandedBatch(std::unique_ptr<dt::Batch> b, std::shared_ptr<dt::BatchPool> p)
      : batch(std::move(b)), pool(std::move(p)) {}
  HandedBatch(const HandedBatch&) = delete;
  HandedBatch& operator=(const HandedBatch&) = delete;
  ~HandedBatch() {
    if (pool) pool->release(std::move(batch));
  }
  std::unique_ptr<dt::Batch> batch;
  std::shared_ptr<dt::BatchPool> pool;
};

// Zero-copy numpy views of a batch, shaped for DecisionTransformer.forward, all kept alive by one capsule.
py::dict to_numpy(const Core& core, std::unique_ptr<dt::Batch> batch, std::shared_ptr<dt::BatchPool> pool) {
  const py::ssize_t B = static_cast<py::ssize_t>(batch->episode.size()), T = core.options().context_len;
  const py::ssize_t S = core.state_dim(), A = core.act_dim();
  dt::Batch* b = batch.get();
  auto owner = std::make_unique<HandedBatch>(std::move(batch), std::move(pool));
  py::capsule base(owner.get(), [](void* p) { delete static_cast<HandedBatch*>(p); });
  owner.release();  // the capsule owns it now
  py::dict out;
  out["states"] = py::array_t<float>({B, T, S}, b->states.data(), base);
  out["actions"] = py::array_t<float>({B, T, A}, b->actions.data(), base);
  out["rewards"] = py::array_t<float>({B, T, py::ssize_t{1}}, b->rewards.data(), base);
  out["returns_to_go"] = py::array_t<float>({B, T, py::ssize_t{1}}, b->returns_to_go.data(), base);
  out["timesteps"] = py::array_t<int64_t>({B, T}, b->timesteps.data(), base);
  out["attention_mask"] = py::array_t<float>({B, T}, b->attention_mask.data(), base);
  return out;
}

py::tuple draw(const Core& core, uint64_t seed, uint64_t rank, uint64_t batch) {
  const py::ssize_t B = core.options().batch_size;
  py::array_t<int64_t> episode(B), start(B);
  core.draw(dt::stream_key(seed, rank), batch, episode.mutable_data(), start.mutable_data());
  return py::make_tuple(episode, start);
}

py::dict windows(const Core& core, const py::object& episode_in, const py::object& start_in) {
  const auto episode = read_array<int64_t>(episode_in, "episode");
  const auto start = read_array<int64_t>(start_in, "start");
  check_rank(episode, "episode", 1);
  check_rank(start, "start", 1);
  check_len(start, "start", 0, episode.shape(0), "len(episode)");
  auto batch = std::make_unique<dt::Batch>(episode.shape(0), core.options().context_len, core.state_dim(),
                                           core.act_dim());
  batch->episode.assign(episode.data(), episode.data() + episode.shape(0));
  batch->start.assign(start.data(), start.data() + start.shape(0));
  {
    py::gil_scoped_release release;
    core.fill(*batch);
  }
  return to_numpy(core, std::move(batch), nullptr);
}

std::unique_ptr<dt::Prefetcher> make_prefetcher(std::shared_ptr<Core> core, uint64_t seed, uint64_t rank,
                                                uint64_t first_batch, int num_threads, int ring_size) {
  return std::make_unique<dt::Prefetcher>(std::move(core), dt::stream_key(seed, rank), first_batch, num_threads,
                                          ring_size);
}

py::dict next_batch(dt::Prefetcher& prefetcher) {
  std::unique_ptr<dt::Batch> batch;
  {
    py::gil_scoped_release release;
    batch = prefetcher.next();
  }
  return to_numpy(prefetcher.sampler(), std::move(batch), prefetcher.pool());
}

}  // namespace

void bind_sampler(py::module_& m) {
  py::class_<Core, std::shared_ptr<Core>>(m, "SamplerCore",
                                          "Dataset in window form: normalised states, precomputed returns-to-go.")
      .def(py::init(&make_core), py::arg("observations"), py::arg("actions"), py::arg("rewards"), py::arg("offsets"),
           py::arg("state_mean"), py::arg("state_std"), py::arg("context_len"), py::arg("batch_size"), py::arg("scale"),
           py::arg("gamma"), py::arg("max_ep_len"), py::arg("capacity") = 0,
           "capacity 0: a fixed dataset; >= 1: a replay buffer of at most `capacity` episodes.")
      .def_property_readonly("n_steps", &Core::n_steps)
      .def_property_readonly("n_episodes", &Core::n_episodes)
      .def_property_readonly("capacity", [](const Core& c) { return c.options().capacity; })
      .def("appended", &appended, py::arg("observations"), py::arg("actions"), py::arg("rewards"), py::arg("lengths"),
           "A new core: this buffer's episodes plus these whole episodes, the oldest beyond the capacity evicted.")
      .def("restored", &restored, py::arg("states"), py::arg("actions"), py::arg("rewards"), py::arg("lengths"),
           "A new core holding exactly these episodes (states already normalised, as episodes() gives them).")
      .def("episodes", &episodes,
           "(states, actions, rewards, lengths) of the held episodes, oldest first (copies; states normalised).")
      .def("draw", &draw, py::arg("seed"), py::arg("rank"), py::arg("batch"),
           "(episode, start) int64 [batch_size] of batch `batch` of the stream (seed, rank).")
      .def("windows", &windows, py::arg("episode"), py::arg("start"),
           "The windows of the given rows as a dict of numpy arrays; checks every index.");
  py::class_<dt::Prefetcher>(m, "SamplerPrefetcher", "Batches of one stream built ahead by worker threads.")
      .def(py::init(&make_prefetcher), py::arg("core"), py::arg("seed"), py::arg("rank"), py::arg("first_batch"),
           py::arg("num_threads"), py::arg("ring_size"))
      .def("next", &next_batch, "The next batch as a dict of numpy arrays (GIL released while waiting).");
}

}  // namespace dt_py
