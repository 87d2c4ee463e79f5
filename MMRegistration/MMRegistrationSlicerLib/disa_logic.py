"""GUI-free logic of the DISA Similarity module: image-based registration on DISA descriptors (engine method
``disa``, paper 001) through the shared :class:`~MMRegistrationSlicerLib.registration_logic.RegistrationLogic`, and
similarity heatmaps of one fixed point against the moving image. The scene is passed explicitly, so it runs inside
Slicer and on the PyPI ``slicer-core`` (where the tests exercise it).

- Registration needs the two volumes only. Segmentations (both or neither) restrict the similarity when ``mask``
  is not ``none`` and add segment metrics; landmarks add the TRE. A rigid/affine result is a linear transform node,
  a probe or deformable result a grid transform node; either is fixed -> moving (FromParent), set as the moving
  volume's parent by default (see ``registration_logic`` for the geometry conventions).
- A heatmap compares the fixed descriptor at a markups control point (world coordinates, inside the ultrasound
  field of view) with every moving descriptor (:func:`MMRegistrationLib.similarity.heatmap.similarity_heatmap`).
  The result lies on the moving volume's own grid and goes under the moving volume's parent transform, so it
  overlays the moving volume wherever that is shown; given a fixed -> moving transform it lies on the fixed grid.
- Descriptors computed for heatmaps are kept (:class:`DescriptorCache`): clicking point after point describes each
  image once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from MMRegistrationSlicerLib import bridge
from MMRegistrationSlicerLib.module_widget import mark_derived
from MMRegistrationSlicerLib.registration_logic import RegistrationLogic, readable_engine_error

METHOD = "disa"
LABEL = "DISA"
HEATMAP_SIMILARITIES = ("disa", "mind")
HEATMAP_SPACING_MM = 2.0
"""Default working spacing of heatmaps and descriptor pictures (``mmreg disa-heatmap``'s; see
:meth:`DISALogic.heatmap`)."""
"""Similarities that have descriptors, hence heatmaps (``lc2`` and ``mi`` compare whole patches/histograms)."""
HEATMAP_COLORS = ("Plasma", "Inferno", "ColdToHotRainbow", "Viridis", "Rainbow")
"""Colour tables tried in this order for a heatmap (by node name); none present: the display is left as is."""


def _name(node) -> str:
    return f"'{node.GetName()}'"


# ---- descriptor cache -------------------------------------------------------------------------------------
class DescriptorCache:
    """Descriptor volumes kept between heatmaps, keyed by the backend and by the prepared image's content and
    geometry (a SHA-1 of its arrays and voxel-to-world affine). A volume that is edited, re-sampled or moved by its
    parent transform is therefore described afresh, and an unchanged one never twice. Least recently used entries
    beyond ``max_entries`` are dropped. ``hits``/``misses`` count look-ups."""

    def __init__(self, max_entries: int = 6):
        self.max_entries = int(max_entries)
        self._entries: OrderedDict = OrderedDict()
        self._backends: dict = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self._backends.clear()

    def backend(self, similarity: str, weights: Optional[str], device, precision: str = "auto"):
        """The caching descriptor backend for ``similarity`` (``disa``: the network from ``weights``, None = the
        shipped weights, forward pass in ``precision``; ``mind``: MIND-SSC) on ``device``, built by the engine's
        ``make_backend``; the network is loaded once."""
        key = (similarity, weights, str(device), precision)
        if key not in self._backends:
            from MMRegistrationLib.similarity.descriptors import make_backend

            self._backends[key] = _cached_backend(make_backend(similarity, weights, device, precision), self, key)
        return self._backends[key]

    def lookup(self, backend_key: tuple, volume, compute):
        key = (backend_key, _volume_digest(volume))
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        result = compute()
        self._entries[key] = result
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return result


def _volume_digest(volume) -> str:
    digest = hashlib.sha1()
    for array in (volume.array, volume.mask, volume.grid.affine):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _cached_backend(inner, cache: DescriptorCache, key: tuple):
    """A descriptor backend answering from ``cache`` and asking ``inner`` on a miss."""
    from MMRegistrationLib.similarity.descriptors import DescriptorBackend

    class CachedDescriptors(DescriptorBackend):
        name, kind, min_voxels = inner.name, inner.kind, inner.min_voxels

        def describe(self, volume, argument: str = "image"):
            return cache.lookup(key, volume, lambda: inner.describe(volume, argument))

    return CachedDescriptors()


# ---- results ----------------------------------------------------------------------------------------------
@dataclass
class HeatmapResult:
    """What :meth:`DISALogic.heatmap` produced.

    Attributes:
        volume: the heatmap volume node.
        point_ras: the fixed point used (world RAS mm).
        peak_ras: the heatmap's maximum (world RAS mm: through the heatmap node's parent transform, so after a
            registration its distance to ``point_ras`` is meaningful).
        peak_value, point_value: the maximum, and the heatmap where ``point_ras`` shows on it (trilinear; NaN
            outside its grid).
        image: the engine :class:`Image` (LPS, the node's local coordinates) written into ``volume``.
    """

    volume: object
    point_ras: np.ndarray
    peak_ras: np.ndarray
    peak_value: float
    point_value: float
    image: object


@dataclass
class DescriptorResult:
    """What :meth:`DISALogic.describe` produced.

    Attributes:
        fixed_volume, moving_volume: the RGB vector volume nodes (descriptor grids; the moving one under the moving
            volume's parent transform).
        spacing_mm: the working spacing the images were described at (the descriptor grid is 4x coarser for DISA).
        counts: descriptors inside the fixed and the moving field of view.
        seconds: time spent describing (0 when both came from the cache).
    """

    fixed_volume: object
    moving_volume: object
    spacing_mm: float
    counts: tuple
    seconds: float


class DISALogic:
    """DISA registration and similarity heatmaps on MRML nodes. Bad input raises ValueError naming the input and the
    fix; a failed or cancelled call leaves the scene as it was."""

    def __init__(self, scene):
        self.scene = scene
        self.registration = RegistrationLogic(scene, METHOD, LABEL)
        self.cache = DescriptorCache()

    # ---- registration ----------------------------------------------------------------------------------
    def register(
        self,
        fixed_volume,
        moving_volume,
        fixed_segmentation=None,
        moving_segmentation=None,
        initial_transform=None,
        mode: str = "rigid",
        search: str = "local",
        similarity: str = "disa",
        mask: str = "none",
        options: Optional[dict] = None,
        init: Optional[str] = None,
        seed: int = 0,
        device: str = "auto",
        fixed_landmarks=None,
        moving_landmarks=None,
        segment_mapping: Optional[dict] = None,
        output_transform=None,
        apply_to_moving: bool = True,
        inverse_transform=None,
        make_inverse: bool = False,
        warped_volume=None,
        make_warped_volume: bool = False,
        table=None,
        make_table: bool = True,
        propagate_segmentation: bool = False,
        progress=None,
        cancel=None,
        roi=None,
    ):
        """Register ``moving_volume`` (e.g. MR) onto ``fixed_volume`` (e.g. TRUS) with the engine's ``disa`` method.

        Args:
            fixed_segmentation, moving_segmentation: optional (both or neither): needed when ``mask`` is not
                ``none``; otherwise they only add segment metrics (and the centre-of-mass start).
            initial_transform: optional linear transform node (fixed -> moving FromWorld mapping) to start from.
            mode, search, similarity, mask: the engine options of the same names (``rigid|affine|probe|deformable``,
                ``local|global``, ``disa|lc2|mind|mi``, ``none|fixed|moving|both``).
            options: further engine options (``iterations``, ``spacing_mm``, ``starts``, ``weights`` ...).
            init: initialiser (default: ``com`` with segmentations, else ``none``).
            fixed_landmarks, moving_landmarks: optional point lists for the TRE in the metrics table.
            roi: optional markups ROI node (world coordinates): the similarity is counted only at fixed points
                inside the box (with ``mask`` fixed/both: inside both); a ValueError naming it when it selects no
                fixed voxel.
            The outputs and callbacks are those of ``RegistrationLogic.process`` (a cancelled run adds no node).

        Returns:
            The ``RegistrationOutcome``.
        """
        if mask != "none" and (fixed_segmentation is None or moving_segmentation is None):
            raise ValueError(f"mask: '{mask}' restricts the similarity to the segmentations, but the fixed and the "
                             "moving segmentation are not both selected; select them, or set mask to 'none'")
        given = dict(options or {})
        clash = sorted({"mode", "search", "similarity", "mask"} & set(given))
        if clash:
            raise ValueError(f"options: {clash} are arguments of their own; pass them as such")
        given.update(mode=mode, search=search, similarity=similarity, mask=mask)
        return self.registration.process(
            fixed_volume, moving_volume, fixed_segmentation, moving_segmentation, segment_mapping, initial_transform,
            init, given, seed, device, fixed_landmarks, moving_landmarks, output_transform=output_transform,
            apply_to_moving=apply_to_moving, inverse_transform=inverse_transform, make_inverse=make_inverse,
            warped_volume=warped_volume, make_warped_volume=make_warped_volume,
            propagate_segmentation=propagate_segmentation, table=table, make_table=make_table, progress=progress,
            cancel=cancel, roi=roi)

    # ---- shared by descriptors and heatmaps ------------------------------------------------------------
    @staticmethod
    def _read_volumes(fixed_volume, moving_volume, similarity: str, task: str) -> tuple:
        """``(fixed image in world coordinates, moving image in its own)`` after checking the selection."""
        for node, which in ((fixed_volume, "fixed"), (moving_volume, "moving")):
            if node is None:
                raise ValueError(f"{which} volume: no volume was selected")
        if similarity not in HEATMAP_SIMILARITIES:
            raise ValueError(f"{task} similarity: '{similarity}' has no descriptors to compare point by point; "
                             f"choose one of {', '.join(HEATMAP_SIMILARITIES)}")
        fixed = bridge.image_from_volume(fixed_volume, "fixed volume")
        moving = bridge.image_from_volume(moving_volume, "moving volume", include_parent_transform=False)
        return fixed, moving

    def _backend(self, similarity: str, weights: Optional[str], spacing_mm: Optional[float], device: str) -> tuple:
        """``(caching descriptor backend, working spacing (None: :data:`HEATMAP_SPACING_MM`), torch device)``;
        engine errors propagate."""
        from MMRegistrationLib.core.device import resolve_device
        from MMRegistrationLib.registration.disa import DISARegistrationConfig

        torch_device = resolve_device(device, "--device")
        config = DISARegistrationConfig(similarity=similarity, spacing_mm=spacing_mm)  # checks the values
        backend = self.cache.backend(similarity, weights, torch_device, config.precision)
        return backend, HEATMAP_SPACING_MM if spacing_mm is None else float(spacing_mm), torch_device

    # ---- descriptors -----------------------------------------------------------------------------------
    def describe(
        self,
        fixed_volume,
        moving_volume,
        fixed_output=None,
        moving_output=None,
        similarity: str = "disa",
        weights: Optional[str] = None,
        spacing_mm: Optional[float] = None,
        fixed_fov_threshold: Optional[float] = 0.0,
        moving_fov_threshold: Optional[float] = None,
        device: str = "auto",
    ) -> DescriptorResult:
        """Describe both volumes (kept in the cache, so later heatmaps of these volumes start at once) and show the
        descriptors as RGB vector volumes in one shared colour space (engine ``descriptor_colours``: the first three
        principal components of both images' descriptors): where the two images show the same anatomy in the same
        colour, their descriptors agree. The images are read as the heatmap reads them (the fixed one in world
        coordinates, the moving one in its own, under its parent transform like the heatmap).

        Args:
            fixed_output, moving_output: vector volume nodes to fill (created if None).
            similarity: ``disa`` or ``mind``; weights, spacing_mm, thresholds, device: as for :meth:`heatmap`.

        Returns:
            A :class:`DescriptorResult`.
        """
        import time

        from MMRegistrationLib.core.errors import InputError, MMRegError
        from MMRegistrationLib.similarity.descriptors import descriptor_colours
        from MMRegistrationLib.similarity.disa import prepare_volume

        fixed, moving = self._read_volumes(fixed_volume, moving_volume, similarity, "descriptor")
        inputs = {fixed_volume.GetID(), moving_volume.GetID()}
        for node, which in ((fixed_output, "fixed"), (moving_output, "moving")):
            if node is not None and node.GetID() in inputs:
                raise ValueError(f"{which} descriptor volume: {_name(node)} is an input; choose another node or "
                                 "create a new one")
        if fixed_output is not None and moving_output is not None and fixed_output.GetID() == moving_output.GetID():
            raise ValueError("descriptor volumes: the fixed and the moving output must be different nodes")
        try:
            backend, spacing, _ = self._backend(similarity, weights, spacing_mm, device)
            start = time.perf_counter()
            fixed_desc = backend(prepare_volume(fixed, spacing, fixed_fov_threshold, "--fixed"), "--fixed")
            moving_desc = backend(prepare_volume(moving, spacing, moving_fov_threshold, "--moving"), "--moving")
            seconds = time.perf_counter() - start
            pictures = descriptor_colours([fixed_desc, moving_desc])
        except (InputError, MMRegError) as err:
            raise ValueError(readable_engine_error(err, LABEL, "descriptors")) from err
        before = bridge.scene_node_ids(self.scene)
        nodes = []
        try:
            for desc, picture, node, source, parent in (
                    (fixed_desc, pictures[0], fixed_output, fixed_volume, None),
                    (moving_desc, pictures[1], moving_output, moving_volume, moving_volume.GetTransformNodeID())):
                name = f"{source.GetName()} {similarity.upper()} descriptors"
                out = mark_derived(bridge.vector_volume_from_array(picture, desc.grid, self.scene, name, node=node),
                                   "DISA descriptors")
                out.SetAndObserveTransformNodeID(parent)
                nodes.append(out)
        except BaseException:
            bridge.remove_nodes_added_since(self.scene, before)
            raise
        counts = tuple(int(d.mask.sum()) for d in (fixed_desc, moving_desc))
        return DescriptorResult(nodes[0], nodes[1], float(spacing), counts, seconds)

    # ---- heatmap ---------------------------------------------------------------------------------------
    def heatmap(
        self,
        fixed_volume,
        moving_volume,
        point_node,
        output_volume=None,
        transform=None,
        point_index: int = 0,
        similarity: str = "disa",
        weights: Optional[str] = None,
        spacing_mm: Optional[float] = None,
        fixed_fov_threshold: Optional[float] = 0.0,
        moving_fov_threshold: Optional[float] = None,
        device: str = "auto",
    ) -> HeatmapResult:
        """Similarity of the fixed image at one control point of ``point_node`` to every point of the moving image.

        Args:
            fixed_volume, moving_volume: the volumes (may be the same node); the fixed one is read in world
                coordinates, the moving one in its own (its parent transform is where the heatmap goes too).
            point_node: markups point list; ``point_index`` picks the control point (negative: from the end).
            output_volume: scalar volume node to fill (created if None).
            transform: optional fixed -> moving transform node (e.g. a registration result): the heatmap is then
                pulled back onto the fixed volume's grid, where a good registration puts its peak on the point.
            similarity: ``disa`` (dot products of DISA descriptors) or ``mind`` (1 - mean squared MIND-SSC
                difference).
            weights: DISA weights file (None = the shipped ones).
            spacing_mm: working spacing (None = 2 mm, as ``mmreg disa-heatmap``: one point's heatmap needs the
                larger patches of a coarse grid, unlike a registration, which pools thousands of points; on the
                sample case the true MR point beat 75 % of the MR voxels at 2 mm, 66 % at the registration's
                0.8 mm).
            fixed_fov_threshold, moving_fov_threshold: field of view = voxels above the value (None = all; 0 suits
                ultrasound).

        Returns:
            A :class:`HeatmapResult`; the volume has a colour table suited to an overlay when one is in the scene.
        """
        from MMRegistrationLib.core.errors import InputError, MMRegError
        from MMRegistrationLib.similarity.heatmap import heatmap_peak, similarity_heatmap
        from MMRegistrationLib.spatial.resample import resample

        fixed, moving = self._read_volumes(fixed_volume, moving_volume, similarity, "heatmap")
        if output_volume is not None and any(output_volume.GetID() == n.GetID() for n in (fixed_volume, moving_volume)):
            raise ValueError(f"heatmap volume: {_name(output_volume)} is an input; choose another node or create a "
                             "new one")
        point_lps, label = self._point(point_node, point_index)
        index = fixed.grid.world_to_index(point_lps)
        point_ras = bridge.ras_from_lps(point_lps)
        where = f"{label} at RAS ({', '.join(f'{v:.1f}' for v in point_ras)})"
        if np.any(index < -0.5) or np.any(index > np.array(fixed.grid.size_ijk) - 0.5):
            raise ValueError(f"heatmap point: {where} lies outside the fixed volume {_name(fixed_volume)}; place it "
                             "inside that image")
        engine_transform = None
        if transform is not None:
            engine_transform = bridge.engine_transform_from_node(transform, fixed.grid, argument="heatmap transform")
        try:
            backend, spacing, torch_device = self._backend(similarity, weights, spacing_mm, device)
            heat = similarity_heatmap(fixed, moving, point_lps, engine_transform, backend, spacing_mm=spacing,
                                      fixed_fov_threshold=fixed_fov_threshold,
                                      moving_fov_threshold=moving_fov_threshold, device=torch_device,
                                      point_argument="heatmap point")
        except InputError as err:
            if err.argument == "heatmap point":
                raise ValueError(f"heatmap point: {where} lies outside the field of view of {_name(fixed_volume)} "
                                 "(for ultrasound: the sector; the empty region around it has no image to describe); "
                                 "place it inside") from err
            raise ValueError(readable_engine_error(err, LABEL, "heatmap")) from err
        except MMRegError as err:
            raise ValueError(readable_engine_error(err, LABEL, "heatmap")) from err
        grid = fixed.grid if transform is not None else moving.grid
        heat = resample(heat, grid)  # the volume's own voxels: the overlay matches it voxel for voxel
        peak_lps, peak_value = heatmap_peak(heat)
        if transform is None:  # the heatmap lives in the moving volume's local coordinates, under its parent
            value = value_at(heat, bridge.points_through_parents(moving_volume, point_lps, to_world=False)[0])
            peak_lps = bridge.points_through_parents(moving_volume, peak_lps, to_world=True)[0]
        else:  # on the fixed grid, in world coordinates
            value = value_at(heat, point_lps)
        name = f"{moving_volume.GetName()} {similarity.upper()} heatmap" + (" (on fixed)" if transform is not None else "")
        before = bridge.scene_node_ids(self.scene)
        try:
            node = mark_derived(bridge.volume_from_image(heat, self.scene, name, node=output_volume), "DISA heatmap")
            parent = None if transform is not None else moving_volume.GetTransformNodeID()
            node.SetAndObserveTransformNodeID(parent)
            self._show_as_overlay(node, heat.array)
        except BaseException:
            bridge.remove_nodes_added_since(self.scene, before)
            raise
        return HeatmapResult(node, point_ras, bridge.ras_from_lps(peak_lps), peak_value, value, heat)

    @staticmethod
    def _point(point_node, point_index: int) -> tuple:
        """``(point (3,) LPS mm world, label for messages)`` of one control point."""
        if point_node is None:
            raise ValueError("heatmap point: no point list was selected; place a point in the fixed volume")
        count = point_node.GetNumberOfControlPoints()
        if count == 0:
            raise ValueError(f"heatmap point: the point list {_name(point_node)} has no control point; place one in "
                             "the fixed volume")
        if not -count <= point_index < count:
            raise ValueError(f"heatmap point: {_name(point_node)} has {count} control point(s); index {point_index} "
                             "does not exist")
        n = point_index % count
        points = bridge.landmarks_from_markups(point_node, "heatmap point")
        label = point_node.GetNthControlPointLabel(n) or f"point {n + 1}"
        return points[n], f"'{label}' of {_name(point_node)}"

    def _show_as_overlay(self, node, array: np.ndarray) -> None:
        """Colour table (the first of :data:`HEATMAP_COLORS` in the scene) and a window from 0 (or the minimum) to
        the maximum, so the heatmap reads as an overlay (foreground layer)."""
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is None:
            return
        for color_name in HEATMAP_COLORS:
            collection = self.scene.GetNodesByClassByName("vtkMRMLColorNode", color_name)
            color = collection.GetItemAsObject(0) if collection.GetNumberOfItems() else None
            if color is not None:
                display.SetAndObserveColorNodeID(color.GetID())
                break
        high = float(np.max(array))
        low = 0.0 if high > 0 else float(np.min(array))
        if high > low:
            display.AutoWindowLevelOff()
            display.SetWindowLevelMinMax(low, high)


def value_at(image, point_lps: np.ndarray) -> float:
    """Trilinear value of an engine image at one world point (LPS mm; NaN outside its grid)."""
    import torch

    from MMRegistrationLib.spatial.sampling import sample_at_world

    volume = torch.as_tensor(np.ascontiguousarray(image.array, dtype=np.float64))[None]
    point = torch.as_tensor(np.asarray(point_lps, dtype=np.float64).reshape(1, 3))
    return float(sample_at_world(volume, image.grid, point, outside_value=float("nan"))[0, 0])


# ---- summaries (the module's status line) ----------------------------------------------------------------------
def registration_summary(outcome) -> str:
    """One line: TRE (and the first segment's DSC) before -> after, the rigid part of the result, the run time."""
    parts = []
    if outcome.after is not None and outcome.after.rows:
        before, after = outcome.before.rows[0], outcome.after.rows[0]
        parts.append(f"{after['name']} DSC {before['dice']:.3f} -> {after['dice']:.3f}")
    if outcome.after is not None and outcome.after.tre is not None:
        parts.append(f"TRE {outcome.before.tre['tre_mean_mm']:.2f} -> {outcome.after.tre['tre_mean_mm']:.2f} mm")
    info = outcome.record.get("method_info", {})
    if "rotation_deg" in info:
        parts.append(f"rotation {info['rotation_deg']:.1f} deg, translation "
                     f"{float(np.linalg.norm(info['translation_mm'])):.1f} mm")
    seconds = outcome.record["wall_seconds"]
    text = ", ".join(parts) or "Done"
    return text + f" ({seconds['init'] + seconds['register']:.1f} s on {outcome.record['device']})"


def descriptor_summary(result: DescriptorResult) -> str:
    """One line: how many descriptors, at which spacing, how long."""
    return (f"Descriptors at {result.spacing_mm:g} mm: {result.counts[0]} fixed, {result.counts[1]} moving in the field "
            f"of view ({result.seconds:.2f} s; kept for heatmaps)")


def heatmap_summary(result: HeatmapResult) -> str:
    """One line: where the peak is, how far from the point, and the values."""
    distance = float(np.linalg.norm(result.peak_ras - result.point_ras))
    return (f"Heatmap peak {result.peak_value:.3f} at RAS ({', '.join(f'{v:.1f}' for v in result.peak_ras)}), "
            f"{distance:.1f} mm from the point; value at the point {result.point_value:.3f}")
