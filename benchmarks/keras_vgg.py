"""A VGG-style CNN built and trained the way a Keras user would, outside snnconvert's code, and
exported to ONNX: the model of issue 26's target (``snnconvert model.onnx …``).

Keras 3 on its torch backend (no TensorFlow): Fashion-MNIST read from its IDX files, raw 0–255
pixels, channels last, BatchNorm after each ReLU, max-pooling. Prints the model's test accuracy
and writes ``--out`` (ONNX). Then, as the README shows:

    snnconvert vgg.onnx --data fashion-mnist --no-finetune --neuron signed-if -T 32 --input-scale 255

(the model was trained on raw pixels: ``--input-scale 255``). Needs ``pip install keras``.
"""
from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")


def idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def vgg(keras):
    layers = keras.layers
    blocks = [keras.Input((28, 28, 1))]
    for width in (32, 64):
        for _ in range(2):
            blocks += [layers.Conv2D(width, 3, padding="same"), layers.ReLU(), layers.BatchNormalization()]
        blocks.append(layers.MaxPooling2D())
    blocks += [layers.Flatten(), layers.Dense(128), layers.ReLU(), layers.BatchNormalization(),
               layers.Dense(10), layers.Softmax()]
    return keras.Sequential(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--out", default="vgg.onnx")
    args = parser.parse_args()
    import keras

    keras.utils.set_random_seed(0)
    root = Path(args.data)
    x = idx(root / "train-images-idx3-ubyte.gz")[: args.train_samples, :, :, None].astype("float32")  # raw 0–255
    y = idx(root / "train-labels-idx1-ubyte.gz")[: args.train_samples].astype("int64")
    x_test = idx(root / "t10k-images-idx3-ubyte.gz")[:, :, :, None].astype("float32")
    y_test = idx(root / "t10k-labels-idx1-ubyte.gz").astype("int64")
    model = vgg(keras)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=args.epochs, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(f"Keras test accuracy {100 * accuracy:.2f} % ({time.perf_counter() - start:.0f} s of training)")
    model.export(args.out, format="onnx")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
