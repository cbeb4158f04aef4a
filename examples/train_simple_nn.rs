//! PyTorch's SimpleNN trained with the library's `Trainer`, as the README shows it (a test
//! checks the README holds this file verbatim). Run with
//! `cargo run --release --example train_simple_nn`.

use strata::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The MNIST digits embedded in strata: 8,000 training and 2,000 held-out images [1, 28, 28].
    let (mut train, mut val) = embedded_mnist()?;
    train.normalize(MNIST_MEAN, MNIST_STD)?;
    val.normalize(MNIST_MEAN, MNIST_STD)?;

    // Linear(784, 128) → ReLU → Linear(128, 64) → ReLU → Linear(64, 10), PyTorch's init.
    manual_seed(0);
    let model = ModelSpec::new("SimpleNN")
        .input(&[784]) // each [1, 28, 28] image as 784 values
        .linear("fc1", 784, 128)
        .relu()
        .linear("fc2", 128, 64)
        .relu()
        .linear("fc3", 64, 10)
        .build()?;
    let sgd = SGD::with_config(model.parameters(), SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() })?;

    let history = Trainer::new(&model, Box::new(sgd))
        .loss(CrossEntropyLoss::new())
        .epochs(10)
        .batch_size(64)
        .callback(EarlyStopping::new("val_loss").patience(3).restore_best(true))
        .callback(ProgressBar::new())
        .fit(&train, Some(&val))?;

    for e in &history.epochs {
        let val = e.val.expect("validation data was given");
        println!(
            "epoch {:>2}  loss {:.4}  held-out acc {:.2}%",
            e.epoch,
            e.train_loss.unwrap_or(f64::NAN),
            100.0 * val.accuracy.unwrap_or(0.0)
        );
    }
    model.state_dict().save("simple_nn.safetensors")?; // PyTorch loads it with load_state_dict
    Ok(())
}
