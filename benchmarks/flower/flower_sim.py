"""Flower 1.42 anchor, run inside its own venv by ``benchmarks/fl.py`` (not imported there).

``python flower_sim.py ROUNDS CLIENTS``: Flower's ``run_simulation`` with ``CLIENTS``
virtual SuperNodes (Ray, one CPU each), each doing one SGD step on a 32x1000 batch of
the 1,011,010-parameter MLP, ``flwr.serverapp.strategy.FedAvg`` over ``ROUNDS`` rounds.
Prints one JSON line: start-up (process start to the first round's training sent),
per-round seconds, and the peak RSS of this process tree.

``python flower_sim.py --strategies IN.npz``: Flower's own FedAvg / FedAdam / FedYogi /
FedAdagrad ``aggregate_train`` on the updates in ``IN.npz``; prints their results as
JSON lists, for ``benchmarks/fl.py`` to compare with ours.
"""

import json
import os
import sys
import time

T0 = time.perf_counter()


def mlp():
    from torch import nn

    return nn.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))


def simulate(rounds: int, clients: int) -> dict:
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    torch.set_num_threads(1)
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)
        model = mlp()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(32, 1000), torch.randint(0, 10, (32,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                              "metrics": MetricRecord({"num-examples": 32})})
        return Message(content=content, reply_to=msg)

    marks: list[float] = []

    class Timed(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            marks.append(time.perf_counter())
            return super().configure_train(server_round, arrays, config, grid)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = Timed(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients,
                         min_available_nodes=clients)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(mlp().state_dict()),
                       num_rounds=rounds)
        marks.append(time.perf_counter())

    run_simulation(server_app=server, client_app=client, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": os.cpu_count()}})
    per_round = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"startup_s": marks[0] - T0, "rounds_s": per_round}


def strategies(path: str) -> dict:
    import numpy as np
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedYogi

    class Reply:  # what aggregate_train reads of a reply Message (a real one needs a run)
        def __init__(self, content: RecordDict) -> None:
            self.content = content

        def has_error(self) -> bool:
            return False

        def has_content(self) -> bool:
            return True

    data = np.load(path)
    current = {"w": data["current"]}
    rounds = data["updates"]  # [rounds, clients, size]
    counts = data["counts"]  # [clients]
    out = {}
    for name, cls in (("fedavg", FedAvg), ("fedadam", FedAdam), ("fedyogi", FedYogi),
                      ("fedadagrad", FedAdagrad)):
        strategy = cls()
        arrays = ArrayRecord({k: Array(v) for k, v in current.items()})
        for t, updates in enumerate(rounds, start=1):
            if hasattr(strategy, "current_arrays"):
                strategy.current_arrays = {k: a.numpy() for k, a in arrays.items()}
            replies = []
            for u, n in zip(updates, counts, strict=True):
                content = RecordDict({"arrays": ArrayRecord({"w": Array(u)}),
                                      "metrics": MetricRecord({"num-examples": int(n)})})
                replies.append(Reply(content))
            arrays, _ = strategy.aggregate_train(t, replies)
        out[name] = arrays["w"].numpy().tolist()
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--strategies":
        print(json.dumps(strategies(sys.argv[2])))
    else:
        print(json.dumps(simulate(int(sys.argv[1]), int(sys.argv[2]))))
