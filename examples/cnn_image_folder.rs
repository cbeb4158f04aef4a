//! A small CNN trained and evaluated on an image folder (one sub-folder per class, as
//! torchvision's `ImageFolder` reads) with the library's `Trainer`. Run with
//! `cargo run --release --example cnn_image_folder -- DIR` for your own folder of PNG/JPEG
//! images; without `DIR` it first writes 1,000 of the embedded MNIST digits as PNG files into a
//! temporary folder, so it runs anywhere.

use strata::data::{ImageFolder, ImageFolderOptions};
use strata::nn::LayerSpec;
use strata::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => write_digit_folder(1000)?,
    };
    let folder = ImageFolder::load(&dir, &ImageFolderOptions { channels: 1, resize: Some((28, 28)) })?;
    let (mut train, mut val) = folder.dataset.split(folder.dataset.len() / 5, 0)?; // hold a fifth out
    let (mean, std) = strata::data::compute_stats(&train)?;
    train.normalize(mean[0], std[0])?;
    val.normalize(mean[0], std[0])?;

    // conv 3×3 → ReLU → max-pool 2 → conv 3×3 → ReLU → max-pool 2 → flatten → linear.
    let pool = || LayerSpec::MaxPool2d(strata::core::MaxPool2dOptions::new((2, 2)));
    let model = ModelSpec::new("SmallCNN")
        .conv2d("conv1", Some(1), 8, 3, 1, 1)
        .relu()
        .layer("pool1", pool())
        .conv2d("conv2", Some(8), 16, 3, 1, 1)
        .relu()
        .layer("pool2", pool())
        .flatten()
        .linear("fc", 16 * 7 * 7, folder.classes.len())
        .build()?;
    let adam = Adam::new(model.parameters(), 2e-3)?;
    let mut trainer = Trainer::new(&model, Box::new(adam)).epochs(5).batch_size(32).callback(ProgressBar::new());
    let history = trainer.fit(&train, Some(&val))?;
    let last = history.last_val().expect("held-out data");
    println!("classes {:?}", folder.classes);
    println!("held-out: loss {:.4}, accuracy {:.2}%", last.loss, 100.0 * last.accuracy.unwrap_or(0.0));
    println!("training data: accuracy {:.2}%", 100.0 * trainer.evaluate(&train)?.accuracy.unwrap_or(0.0));
    Ok(())
}

/// Writes the first `n` embedded MNIST digits as 28×28 grayscale PNGs into `TMP/<digit>/`.
fn write_digit_folder(n: usize) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let (digits, _) = embedded_mnist()?; // pixels in [0, 1], [1, 28, 28]
    let root = std::env::temp_dir().join(format!("strata-digits-{}", std::process::id()));
    for i in 0..n.min(digits.len()) {
        let (pixels, label) = digits.sample(i)?;
        let class = root.join(label.to_string());
        std::fs::create_dir_all(&class)?;
        let bytes: Vec<u8> = pixels.iter().map(|p| (p * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(28, 28, bytes).ok_or("28×28 pixels")?.save(class.join(format!("{i:05}.png")))?;
    }
    println!("wrote {n} digits as PNG files under {}", root.display());
    Ok(root)
}
