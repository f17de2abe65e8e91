"""Quantization-aware fine-tuning shared by the qat (NNCF) and pt2e routes: distillation towards the float model
on the training split, BatchNorm statistics frozen."""

from __future__ import annotations

from typing import Callable

from edgeseg.quantize.options import QuantizeOptions


def fine_tune(quantized, ckpt, opts: QuantizeOptions, log: Callable[[str], None],
              on_epoch_end: Callable[[int], None] | None = None):
    """QAT: train the fake-quantized model (NNCF's, or a PT2E graph behind :func:`exporters.tflite_pt2e.nchw_view`;
    straight-through gradients) with the run's loss plus ``distill`` x KL(float model || quantized model) on the
    training split; BatchNorm statistics frozen. ``on_epoch_end(epoch)`` runs after each epoch (0-based)."""
    import torch
    import torch.nn.functional as F

    from edgeseg.data import open_split
    from edgeseg.data.transforms import TensorDataset, batches, collate
    from edgeseg.core.progress import progress_bar
    from edgeseg.train.loop import build_criterion

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ckpt.config
    teacher = ckpt.build_model(ckpt.weights_choice(opts.weights)).to(device).eval()
    model = quantized.to(device).train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()  # frozen statistics: small fine-tuning batches would shift them away from the float model's
    criterion = build_criterion(cfg.loss, teacher, ckpt.num_classes)
    for t in criterion.terms:
        t.loss.to(device)
    train_ds = open_split(cfg.data, "train", cfg.image_size)
    tds = TensorDataset(train_ds, ckpt.preprocess, augment=cfg.augment, seed=opts.seed,
                        distance_maps=criterion.needs_distance_maps)
    gen = torch.Generator().manual_seed(opts.seed)
    drop_last = len(tds) > cfg.batch_size
    per_epoch = len(tds) // cfg.batch_size if drop_last else 1
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=opts.lr, weight_decay=0.0)
    steps = opts.epochs * per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    history = []
    with progress_bar(steps, f"QAT ({opts.epochs} epochs)") as bar:
        for epoch in range(opts.epochs):
            # items indexed by (sample, epoch): augmentation randomness follows the epoch, as in training
            order = [(int(i), epoch) for i in torch.randperm(len(tds), generator=gen)]
            loader = torch.utils.data.DataLoader(tds, batch_size=cfg.batch_size, sampler=order, collate_fn=collate,
                                                 drop_last=drop_last)
            total, count = 0.0, 0
            for batch in batches(loader, data=cfg.data):
                x, y = batch[0].to(device), batch[1].to(device)
                dist = batch[2].to(device) if len(batch) > 2 else None
                out = model(x)
                loss = opts.task_weight * criterion(out, y, dist, epoch) if opts.task_weight > 0 else 0.0
                if opts.distill > 0:
                    logits = out["out"] if isinstance(out, dict) else out
                    with torch.no_grad():
                        ref = teacher(x)
                        ref = ref["out"] if isinstance(ref, dict) else ref
                    kd = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1), log_target=True,
                                  reduction="none").sum(1).mean()
                    loss = loss + opts.distill * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
                count += 1
                bar.advance()
            history.append(round(total / max(count, 1), 5))
            log(f"QAT epoch {epoch + 1}: loss {history[-1]:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    opts.notes.append(f"QAT loss per epoch: {history}")
    return model.cpu().eval()
