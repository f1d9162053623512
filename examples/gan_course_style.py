"""A two-dimensional GAN written the way the course's lecture notebooks write needle code.

The "real" data is a Gaussian: standard normal points mapped by a fixed linear map and
shifted. The generator is one linear layer, so it can represent that distribution exactly;
the discriminator is a small MLP that labels real points 1 and generated ones 0. Both are
trained against each other with `nn.SoftmaxLoss` on integer labels made by
`ndl.ones(batch, dtype="int32")` / `ndl.zeros(...)`, two Adam optimizers, `.detach()`, and
`loss.backward()` with no `reset_grad()` (needle replaces `.grad` on every backward).

Run: python examples/gan_course_style.py [steps]
It prints the mean and covariance of the data and of the generator's samples before and
after training.
"""

import sys

import numpy as np

import needle as ndl
from needle import nn

np.random.seed(0)

MIX = np.array([[1.0, 2.0], [-0.2, 0.5]])
SHIFT = np.array([2.0, 1.0])
real_points = np.random.normal(0, 1, (3200, 2)) @ MIX + SHIFT

generator = nn.Sequential(nn.Linear(2, 2))
discriminator = nn.Sequential(
    nn.Linear(2, 20),
    nn.ReLU(),
    nn.Linear(20, 10),
    nn.ReLU(),
    nn.Linear(10, 2),
)
criterion = nn.SoftmaxLoss()
opt_generator = ndl.optim.Adam(generator.parameters(), lr=0.01)
opt_discriminator = ndl.optim.Adam(discriminator.parameters(), lr=0.01)


def generate(count):
    noise = ndl.Tensor(np.random.normal(0, 1, (count, 2)))
    return generator(noise).numpy()


def step_generator(noise):
    """Move the generator so that the discriminator calls its points real (label 1)."""
    fooled = discriminator(generator(noise))
    labels = ndl.ones(noise.shape[0], dtype="int32")
    loss = criterion(fooled, labels)
    loss.backward()
    opt_generator.step()


def step_discriminator(points, noise):
    """Teach the discriminator: real points are 1, generated ones (detached) are 0."""
    fake = generator(noise).detach()
    batch = points.shape[0]
    loss = criterion(discriminator(points), ndl.ones(batch, dtype="int32")) + criterion(
        discriminator(fake), ndl.zeros(batch, dtype="int32")
    )
    loss.backward()
    opt_discriminator.step()


def train(steps, batch=32):
    for step in range(steps):
        start = (batch * step) % real_points.shape[0]
        points = ndl.Tensor(real_points[start : start + batch])
        noise = ndl.Tensor(np.random.normal(0, 1, (batch, 2)))
        step_discriminator(points, noise)
        step_generator(noise)


def describe(name, points):
    points = np.asarray(points, dtype=np.float64)
    mean, cov = points.mean(axis=0), np.cov(points.T)
    print(f"{name}: mean {np.round(mean, 3).tolist()} cov {np.round(cov, 3).tolist()}")


if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    describe("data", real_points)
    describe("before", generate(3200))
    train(steps)
    describe("after", generate(3200))
