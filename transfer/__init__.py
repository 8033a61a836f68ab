"""Transfer learning: fine-tune a CFN branch or a torchvision backbone on labelled datasets."""
