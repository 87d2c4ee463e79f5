"""``--fixed-seg auto`` / ``--moving-seg auto``: a segmentation predicted by the shipped network instead of a file.

``auto`` segments the fixed image as TRUS and the moving image as MR (the MR -> TRUS convention); ``auto:mr`` or
``auto:trus`` names the modality. The predicted gland is label 1 named ``prostate``. When the other side is a file,
only its target structure (the gland, chosen by the target-label rule or ``--target-label``) is paired with it.
"""

from __future__ import annotations

from typing import Optional

from MMRegistrationLib.core.errors import InputError

AUTO = "auto"
SIDE_MODALITY = {"fixed": "trus", "moving": "mr"}


def auto_modality(value, side: str, argument: str) -> Optional[str]:
    """The modality to segment when ``value`` asks for a predicted segmentation (``auto``, ``auto:mr``,
    ``auto:trus``), else None (a file)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == AUTO:
        return SIDE_MODALITY[side]
    if text.startswith(AUTO + ":"):
        modality = text.split(":", 1)[1]
        if modality not in ("mr", "trus"):
            raise InputError(argument, f"'{value}': the modality after 'auto:' must be mr or trus")
        return modality
    return None


def check_auto_weights(fixed_seg, moving_seg) -> None:
    """The shipped networks that ``auto`` needs are present and intact (checked before any image is read)."""
    from MMRegistrationLib.segmentation.weights import load_segmentation_net

    for value, side, argument in ((fixed_seg, "fixed", "--fixed-seg"), (moving_seg, "moving", "--moving-seg")):
        modality = auto_modality(value, side, argument)
        if modality is not None:
            load_segmentation_net(modality, None, "cpu", argument)


def predicted_segmentation(image, side: str, modality: str, device=None, progress=None, cancel=None) -> tuple:
    """``(Segmentation with label 1 'prostate', record for result.json)`` of ``image``."""
    from MMRegistrationLib.io.segmentations import Segmentation
    from MMRegistrationLib.segmentation.predict import PROSTATE, prediction_record, segment_image

    argument = f"--{side}-seg"
    predicted = segment_image(image, modality, None, device, argument=f"--{side}", modality_argument=argument,
                              progress=progress, cancel=cancel)
    record = prediction_record(predicted, modality)
    record["warnings"] = [f"{side} segmentation (predicted): {w}" for w in predicted.warnings]
    return Segmentation(predicted.mask, {1: PROSTATE}), record


def target_only(seg, target_label: Optional[str], argument: str) -> tuple:
    """``(Segmentation holding only the target structure as label 1 'prostate', warnings)`` of a file's
    segmentation, to pair with a predicted one."""
    import numpy as np

    from MMRegistrationLib.io.segmentations import Segmentation
    from MMRegistrationLib.io.target_label import choose_target
    from MMRegistrationLib.segmentation.predict import PROSTATE

    choice = choose_target(seg.labelmap.labels(), seg.names, target_label)
    if choice is None:
        raise InputError(argument, "is empty: no structure to pair with the predicted segmentation")
    array = (seg.labelmap.array == choice.value).astype(np.uint8)
    warnings = (choice.warning,) if choice.warning else ()
    return Segmentation(seg.labelmap.with_array(array), {1: PROSTATE}), warnings
