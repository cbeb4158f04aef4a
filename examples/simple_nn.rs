//! PyTorch's SimpleNN, line for line, in strata's API. Run with
//! `cargo run --release --example simple_nn`.
//!
//! ```python
//! class SimpleNN(nn.Module):
//!     def __init__(self):
//!         super().__init__()
//!         self.fc1 = nn.Linear(784, 128)
//!         self.fc2 = nn.Linear(128, 64)
//!         self.fc3 = nn.Linear(64, 10)
//!     def forward(self, x):
//!         x = torch.relu(self.fc1(x))
//!         x = torch.relu(self.fc2(x))
//!         return self.fc3(x)          # logits, no activation
//! model = SimpleNN(); criterion = nn.CrossEntropyLoss()
//! optimizer = optim.SGD(model.parameters(), lr=0.01)
//! output = model(input_data); loss = criterion(output, target)
//! loss.backward(); optimizer.step()
//! ```

use strata::core::Tensor;
use strata::data::{DataLoader, MNIST_MEAN, MNIST_STD, embedded_mnist};
use strata::nn::{CrossEntropyLoss, Linear, Module, Optimizer, Result, SGD};

struct SimpleNN {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl SimpleNN {
    fn new() -> Result<Self> {
        Ok(SimpleNN { fc1: Linear::new(784, 128)?, fc2: Linear::new(128, 64)?, fc3: Linear::new(64, 10)? })
    }
}

impl Module for SimpleNN {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.fc1.forward(x)?.relu()?;
        let x = self.fc2.forward(&x)?.relu()?;
        self.fc3.forward(&x) // logits, no activation
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2), ("fc3".into(), &self.fc3)]
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let model = SimpleNN::new()?;
    let criterion = CrossEntropyLoss::new();
    let mut optimizer = SGD::new(model.parameters(), 0.01)?;

    // One batch of real digits from the embedded data: input_data [64, 784], target [64].
    let (mut train, _) = embedded_mnist()?;
    train.normalize(MNIST_MEAN, MNIST_STD)?;
    let loader = DataLoader::new(&train, 64).shuffle(0);

    for (step, batch) in loader.epoch(0).enumerate() {
        let (input_data, target) = (batch.x.flatten(1, -1)?, batch.y);

        optimizer.zero_grad()?;
        let output = model.forward(&input_data)?;
        let loss = criterion.forward(&output, &target)?;
        loss.backward()?;
        optimizer.step()?;

        if step % 25 == 0 {
            println!("step {step:>3}: loss {:.4}", loss.item()?);
        }
    }
    println!(
        "parameters: {:?}",
        model.named_parameters().iter().map(|(n, p)| format!("{n} {}", p.shape())).collect::<Vec<_>>()
    );
    Ok(())
}
