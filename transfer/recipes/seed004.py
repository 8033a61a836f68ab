"""Seed 004 (Keras, R): blood-cell images, a small CNN with RMSprop and augmentation; VGG16 base."""

RECIPES = {
    "blood-cells-cnn": dict(
        dataset="blood-cells", model="blood-cnn", phase="finetune", batch_size=32, finetune_epochs=30,
        finetune_patience=5, augment=dict(rotation=10, hflip=True, shift=0.3, shear=0.3, zoom=0.2),
        finetune_solver='type: "RMSProp" base_lr: 0.0001 rms_decay: 0.9 lr_policy: "fixed"',
        reported="004: 0.91 (RMSprop), 0.921 with augmentation"),
    "blood-cells-vgg16": dict(
        dataset="blood-cells", model="vgg16", phase="both", input_size=150, batch_size=20, head="512",
        head_epochs=20, finetune_epochs=6, finetune_solver='type: "RMSProp" base_lr: 0.00001 lr_policy: "fixed"',
        reported="004: runs crashed on the authors' hardware after 4-6 epochs"),
}
