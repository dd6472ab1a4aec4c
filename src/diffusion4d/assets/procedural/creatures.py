"""Procedural families of animals and figures: walkers, a bird, swimmers, crawlers, a waving figure and a
jellyfish (skinned, morphed or node-animated). Each family maps a random generator to a :class:`Built`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from diffusion4d.assets.gltf_writer import Channel

from .rigging import (
    Built,
    Motion,
    Rig,
    Scene,
    _a,
    _choose,
    _side,
    _sideways_heading,
    _size,
    _size_word,
    cos_frequency,
    qmul,
    qrot,
    quat,
    quat_between,
    sin_frequency,
    time_grid,
)
from .shapes import (
    _AXIS_FROM_Y,
    _VIVID,
    Part,
    _normalize,
    box,
    chain_bound,
    coloured,
    cone,
    cylinder,
    ellipsoid,
    lathe,
    limb,
    linear,
    merge,
    pick_colours,
    rigid,
    rot,
    segment,
    transformed,
)


def biped_walk(rng: np.random.Generator) -> Built:
    """A two-legged figure walking in place, seen from the side; skinned with rigid weights (one bone per part)."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 55, 90)
    kind = str(rng.choice(["robot", "humanoid"]))
    body, accent = pick_colours(rng, 2, _VIVID + ("grey", "white", "brown"))
    leg_len, torso_h = rng.uniform(0.38, 0.5), rng.uniform(0.3, 0.4)
    torso_w, torso_d = rng.uniform(0.22, 0.3), rng.uniform(0.13, 0.18)
    head_r, limb_r, arm_len = rng.uniform(0.08, 0.11), rng.uniform(0.035, 0.05), rng.uniform(0.3, 0.38)
    freq, amp = cos_frequency(rng), rng.uniform(0.45, 0.7)

    rig = Rig()
    hips = rig.add("hips", -1, (0, leg_len, 0))
    legs = [rig.add(f"leg_{s}", hips, (sx * torso_w / 4, 0, 0)) for s, sx in (("l", 1), ("r", -1))]
    shoulder_x = torso_w / 2 + limb_r
    arms = [rig.add(f"arm_{s}", hips, (sx * shoulder_x, torso_h - limb_r, 0)) for s, sx in (("l", 1), ("r", -1))]
    neck = rig.add("neck", hips, (0, torso_h, 0))
    rest = rig.rest_positions()

    main, second = [], []
    if kind == "robot":
        main.append(rigid(box((torso_w, torso_h, torso_d), (0, leg_len + torso_h / 2, 0)), hips))
        second.append(rigid(box((2 * head_r,) * 3, rest[neck] + (0, head_r + 0.02, 0)), neck))
    else:
        torso = ellipsoid((torso_w / 2, torso_h / 2 + 0.03, torso_d / 2))
        main.append(rigid(transformed(torso, translate=(0, leg_len + torso_h / 2, 0)), hips))
        second.append(rigid(transformed(ellipsoid((head_r,) * 3), translate=rest[neck] + (0, head_r + 0.015, 0)),
                            neck))
    for leg in legs:
        hip = rest[leg]
        main.append(rigid(limb(limb_r * 1.15, hip, (hip[0], 0.05, 0), top_radius=limb_r), leg))
        second.append(rigid(box((limb_r * 2.6, 0.05, limb_r * 4), (hip[0], 0.025, limb_r)), leg))
    for arm in arms:
        sh = rest[arm]
        main.append(rigid(limb(limb_r * 0.9, sh, sh - (0, arm_len, 0)), arm))
        second.append(rigid(transformed(ellipsoid((limb_r * 1.2,) * 3, 10, 6), translate=sh - (0, arm_len, 0)), arm))

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    swing = amp * np.cos(phase)  # starts with legs apart: the widest pose of the cycle
    bob = 0.025 * (1 + np.cos(2 * phase))  # hips dip twice a cycle, lowest when legs are apart
    motion = Motion(times)
    motion.rotations[legs[0]], motion.rotations[legs[1]] = quat("x", swing), quat("x", -swing)
    motion.rotations[arms[0]], motion.rotations[arms[1]] = quat("x", -0.8 * swing), quat("x", 0.8 * swing)
    motion.rotations[hips] = quat("y", 0.12 * swing)
    motion.rotations[neck] = quat("x", 0.06 * np.cos(2 * phase))
    motion.translations[hips] = np.stack([np.zeros_like(times), leg_len - bob, np.zeros_like(times)], 1)

    scene = Scene(heading, scale)
    scene.skinned(rig, [(merge(main), scene.material(body)), (merge(second), scene.material(accent))], motion)
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": body, "accent_color": accent, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    what = {"robot": "robot", "humanoid": "humanoid figure"}[kind]
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body)} {what} with {_a(accent)} head walks to the {attrs['facing']}",
        f"{_a(_size_word(attrs) + body)} two-legged {what} walking in place, facing {attrs['facing']}",
        f"{_a(_size_word(attrs) + body)} {what} strides along, swinging its arms and legs",
    ])
    return Built(scene.finish(), attrs, caption)


def quadruped_trot(rng: np.random.Generator) -> Built:
    """A four-legged creature trotting in place, seen from the side.

    Rigid weights for body, legs and head; a three-bone tail with smoothly blended weights wags behind.
    """
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 55, 90)
    body_c, accent = pick_colours(rng, 2, ("brown", "grey", "white", "black", "orange", "yellow", "red", "blue",
                                           "green", "purple", "pink", "teal"))
    length, half_w, half_h = rng.uniform(0.55, 0.85), rng.uniform(0.12, 0.18), rng.uniform(0.11, 0.16)
    leg_len, leg_r = rng.uniform(0.25, 0.45), rng.uniform(0.03, 0.045)
    neck = str(rng.choice(["short", "long"]))
    neck_len = rng.uniform(0.08, 0.14) if neck == "short" else rng.uniform(0.28, 0.4)
    tail_len = rng.uniform(0.2, 0.32)
    freq, amp = cos_frequency(rng), rng.uniform(0.4, 0.6)

    body_y = leg_len + 0.6 * half_h
    rig = Rig()
    root = rig.add("body", -1, (0, body_y, 0))
    leg_spots = {"fl": (1, 1), "fr": (-1, 1), "bl": (1, -1), "br": (-1, -1)}
    legs = {k: rig.add(f"leg_{k}", root, (sx * 0.6 * half_w, -0.5 * half_h, sz * 0.33 * length))
            for k, (sx, sz) in leg_spots.items()}
    neck_dir = _normalize(np.array([0.0, 0.8, 0.6]) if neck == "long" else np.array([0.0, 0.5, 0.87]))
    neck_j = rig.add("neck", root, (0, 0.3 * half_h, 0.42 * length))
    tail_seg = tail_len / 3
    tail = [rig.add("tail0", root, (0, 0.35 * half_h, -0.48 * length))]
    tail_dir = _normalize(np.array([0.0, 0.35, -1.0]))
    for k in (1, 2):
        tail.append(rig.add(f"tail{k}", tail[-1], tail_dir * tail_seg))
    rest = rig.rest_positions()

    main = [rigid(transformed(ellipsoid((half_w, half_h, length / 2), 18, 10, axis="z"), translate=rest[root]), root)]
    for j in legs.values():
        top = rest[j]
        main.append(rigid(limb(leg_r, top + (0, 0.05, 0), (top[0], 0.0, top[2]), top_radius=leg_r * 1.3), j))
    head_at = rest[neck_j] + neck_dir * neck_len
    main.append(rigid(limb(min(half_w, half_h) * 0.45, rest[neck_j], head_at, top_radius=min(half_w, half_h) * 0.35),
                      neck_j))
    head_r = rng.uniform(0.07, 0.09)
    main.append(rigid(transformed(ellipsoid((head_r * 0.85, head_r * 0.85, head_r * 1.3), 14, 8),
                                  translate=head_at + (0, 0, 0.5 * head_r)), neck_j))
    extra = []
    for sx in (1, -1):  # ears
        extra.append(rigid(segment(cone(0.025, 1.0, 10), head_at + (sx * 0.5 * head_r, 0.6 * head_r, 0),
                                   head_at + (sx * 0.9 * head_r, 1.6 * head_r, -0.2 * head_r)), neck_j))
    # the tail is one tapered tube bent by three bones; blend weights along its length
    tube = segment(cylinder(0.035, 1.0, 10, rings=12, top_radius=0.01), rest[tail[0]], rest[tail[0]] + tail_dir *
                   tail_len)
    along = (tube.positions - rest[tail[0]]) @ tail_dir
    extra.append(chain_bound(tube, along, [0.0, tail_seg, 2 * tail_seg], tail, blend=0.03))

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    swing = amp * np.cos(phase)
    motion = Motion(times)
    for k, j in legs.items():  # a trot moves diagonal pairs together
        motion.rotations[j] = quat("x", swing if k in ("fl", "br") else -swing)
    motion.translations[root] = np.stack([0 * times, body_y - 0.02 * (1 + np.cos(2 * phase)), 0 * times], 1)
    motion.rotations[neck_j] = quat("x", 0.12 * np.cos(2 * phase))
    for k, j in enumerate(tail):
        motion.rotations[j] = quat("y", 0.45 * np.sin(phase - 0.7 * k))

    scene = Scene(heading, scale)
    scene.skinned(rig, [(merge(main), scene.material(body_c)), (merge(extra), scene.material(accent))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "accent_color": accent, "neck": neck, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    neck_phrase = " with a long neck" if neck == "long" else ""
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} four-legged creature{neck_phrase} trots to the {attrs['facing']}",
        f"{_a(_size_word(attrs) + body_c)} quadruped{neck_phrase} trotting in place, wagging its {accent} tail",
        f"{_a(_size_word(attrs) + body_c)} four-legged animal{neck_phrase} trots, facing {attrs['facing']}",
    ])
    return Built(scene.finish(), attrs, caption)


def bird_flap(rng: np.random.Generator) -> Built:
    """A bird facing the camera and flapping; each wing is a two-bone chain with smoothly blended weights."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-35, 35))
    body_c, wing_c, beak_c = pick_colours(rng, 3, ("red", "blue", "yellow", "green", "teal", "purple", "pink",
                                                   "grey", "white", "brown", "black", "orange"))
    bw, bh, bl = rng.uniform(0.09, 0.12), rng.uniform(0.09, 0.12), rng.uniform(0.16, 0.22)
    span, chord = rng.uniform(0.35, 0.5), rng.uniform(0.14, 0.2)
    fast = bool(rng.random() < 0.35)
    freq = float(rng.uniform(2.3, 2.7)) if fast else sin_frequency(rng)
    amp, bias = rng.uniform(0.6, 0.85), rng.uniform(0.05, 0.2)

    rig = Rig()
    root = rig.add("body", -1, (0, 0, 0))
    shoulder_x = 0.6 * bw
    wings, tips = [], []
    for s, sx in (("l", 1), ("r", -1)):
        wings.append(rig.add(f"wing_{s}", root, (sx * shoulder_x, 0.3 * bh, 0)))
        tips.append(rig.add(f"wing_{s}_tip", wings[-1], (sx * span / 2, 0, 0)))

    body = [rigid(ellipsoid((bw, bh, bl), 16, 10, axis="z"), root)]
    head_r = rng.uniform(0.06, 0.08)
    head_at = np.array([0, 0.8 * bh, 0.85 * bl])
    body.append(rigid(transformed(ellipsoid((head_r,) * 3, 14, 8), translate=head_at), root))
    body.append(rigid(transformed(ellipsoid((0.6 * bw, 0.02, 0.5 * bl), 10, 6), linear_map=rot("x", -0.3),
                                  translate=(0, 0.1 * bh, -1.3 * bl)), root))  # tail fan
    beak = [rigid(segment(cone(0.025, 1.0, 10), head_at + (0, 0, 0.8 * head_r), head_at + (0, -0.01, 2.0 * head_r)),
                  root)]
    eye = ellipsoid((0.012,) * 3, 8, 5)
    eyes = [rigid(transformed(eye, translate=head_at + (sx * 0.8 * head_r, 0.3 * head_r, 0.45 * head_r)), root)
            for sx in (1, -1)]
    wing_parts = []
    for w, t, sx in zip(wings, tips, (1, -1)):
        shape = ellipsoid((span / 2, 0.018, chord / 2), 12, 16, axis="x")
        part = transformed(shape, translate=(sx * (shoulder_x + span / 2 - 0.02), 0.3 * bh, -0.01))
        along = sx * part.positions[:, 0]  # distance from the body's mid-plane, outwards
        wing_parts.append(chain_bound(part, along, [0.0, shoulder_x + 0.02, shoulder_x + span / 2], [root, w, t],
                                      blend=0.03))

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    flap = bias + amp * np.sin(phase)
    tip = 0.5 * amp * np.sin(phase - 0.6)  # the outer wing lags, curling the wing on each stroke
    motion = Motion(times)
    for w, t, sx in zip(wings, tips, (1, -1)):
        motion.rotations[w] = quat("z", sx * flap)
        motion.rotations[t] = quat("z", sx * tip)
    motion.translations[root] = np.stack([0 * times, -0.04 * np.sin(phase), 0 * times], 1)

    scene = Scene(heading, scale)
    scene.skinned(rig, [(merge(body), scene.material(body_c)), (merge(wing_parts), scene.material(wing_c)),
                        (merge(beak), scene.material(beak_c)), (merge(eyes), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "wing_color": wing_c, "beak_color": beak_c, "speed": "fast" if fast else
             "slow", "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    how = "rapidly" if fast else "slowly"
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} bird with {wing_c} wings flaps them {how}",
        f"{_a(_size_word(attrs) + body_c)} bird {how} beats its {wing_c} wings up and down",
        f"{_a(_size_word(attrs) + body_c)} bird with {_a(beak_c)} beak flapping its wings",
    ])
    return Built(scene.finish(), attrs, caption)


def _body_chain(part: Part, root_z: float, tail_z: float, bones: int, rig: Rig, blend: float):
    """Spine bones from ``root_z`` back to ``tail_z`` along −Z; returns (joint ids, their z, part bound to them)."""
    zs = np.linspace(root_z, tail_z, bones)
    joints = [rig.add("spine0", -1, (0, 0, zs[0]))]
    for k in range(1, bones):
        joints.append(rig.add(f"spine{k}", joints[-1], (0, 0, zs[k] - zs[k - 1])))
    bound = chain_bound(part, -part.positions[:, 2], -zs, joints, blend)
    return joints, zs, bound


def fish_swim(rng: np.random.Generator) -> Built:
    """A fish (side-to-side tail beat, seen at an angle) or a dolphin-like swimmer (up-and-down, seen from the side).

    One spine of five bones with blended weights carries a travelling wave; the body is vertex-coloured with a
    lighter belly.
    """
    size, scale = _size(rng)
    style = str(rng.choice(["fish", "dolphin"]))
    heading = _sideways_heading(rng, 60, 72) if style == "fish" else _sideways_heading(rng, 75, 90)
    body_c, fin_c = pick_colours(rng, 2, ("orange", "yellow", "red", "blue", "teal", "purple", "pink", "grey",
                                          "green") if style == "fish" else ("grey", "blue", "teal", "black", "pink",
                                                                            "purple"))
    length = rng.uniform(0.6, 0.85)
    if style == "fish":
        rx, ry = rng.uniform(0.05, 0.08), rng.uniform(0.12, 0.18)
    else:
        rx = ry = rng.uniform(0.08, 0.11)
    freq, amp = float(rng.uniform(1.0, 1.5)), rng.uniform(0.22, 0.32)
    axis = "y" if style == "fish" else "x"

    rig = Rig()
    body = ellipsoid((rx, ry, length / 2), 18, 24, axis="z")
    belly = np.clip(-body.positions[:, 1] / ry * 1.5 + 0.3, 0, 1)[:, None]
    body = coloured(body, (1 - belly) * linear(body_c) + belly * linear("white"))
    joints, zs, body = _body_chain(body, 0.2 * length, -0.62 * length, 5, rig, blend=0.05)
    tail_j = joints[-1]

    fins = []
    tail_at = np.array([0, 0, -0.5 * length + 0.02])
    for sign in (1, -1):  # a forked tail fin: vertical for fish, horizontal flukes for dolphins
        lobe = ellipsoid((0.012, 0.11, 0.05) if style == "fish" else (0.11, 0.012, 0.05), 10, 6)
        tilt = rot("x", sign * 0.7) if style == "fish" else rot("y", sign * 0.7)
        direction = (0, sign * 0.07, -0.06) if style == "fish" else (sign * 0.07, 0, -0.06)
        fins.append(rigid(transformed(lobe, linear_map=tilt, translate=tail_at + direction), tail_j))
    dorsal = ellipsoid((0.01, 0.06, 0.09), 10, 6)
    fin = transformed(dorsal, linear_map=rot("x", -0.5), translate=(0, ry * 0.95, 0.0))
    fins.append(chain_bound(fin, -fin.positions[:, 2], -zs, joints, 0.05))
    for sx in (1, -1):  # pectoral fins
        pect = transformed(ellipsoid((0.05, 0.008, 0.025), 8, 5), linear_map=rot("z", sx * 0.5),
                           translate=(sx * rx, -0.3 * ry, 0.15 * length))
        fins.append(rigid(pect, joints[0]))
    eyes = [rigid(transformed(ellipsoid((0.018,) * 3, 8, 5), translate=(sx * rx * 0.75, 0.25 * ry, 0.36 * length)),
                  joints[0]) for sx in (1, -1)]

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    motion = Motion(times)
    for k, j in enumerate(joints):
        weight = 0.25 + 0.75 * k / (len(joints) - 1)  # the wave grows towards the tail
        angle = amp * weight * np.sin(phase - 1.0 * k) if k else -0.3 * amp * np.sin(phase + 0.5)
        motion.rotations[j] = quat(axis, angle)
    bob = 0.015 * np.sin(phase)
    motion.translations[joints[0]] = np.stack([0 * times, bob, 0 * times + zs[0]], 1)

    scene = Scene(heading, scale)
    scene.skinned(rig, [(body, scene.material(None)), (merge(fins), scene.material(fin_c)),
                        (merge(eyes), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "style": style, "color": body_c, "fin_color": fin_c, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    if style == "fish":
        caption = _choose(rng, [
            f"{_a(_size_word(attrs) + body_c)} fish with {fin_c} fins swims, swishing its tail from side to side",
            f"{_a(_size_word(attrs) + body_c)} fish swimming in place, its body rippling",
            f"{_a(_size_word(attrs) + body_c)} fish beats its {fin_c} tail fin",
        ])
    else:
        caption = _choose(rng, [
            f"{_a(_size_word(attrs) + body_c)} dolphin-like creature swims, beating its tail up and down",
            f"{_a(_size_word(attrs) + body_c)} dolphin swimming to the {attrs['facing']} with undulating strokes",
        ])
    return Built(scene.finish(), attrs, caption)


def stabilised_root(local: np.ndarray, offsets: np.ndarray, root_rest) -> tuple[np.ndarray, np.ndarray]:
    """Root rotation [K, 4] and translation [K, 3] that keep a bending chain in place.

    A wave of bends along a chain rooted at one end would otherwise swing the whole body about that end. We turn
    the root so the chain's overall axis (front half → back half) keeps its rest direction, slide it so the
    joints' horizontal centroid stays put, and lift it so the lowest joint stays at its rest height.

    ``local``: the joints' animated local rotations [K, n, 4] (joint 0 is the root); ``offsets``: rest offsets
    of joints 1 … n−1 from their parent [n, 3] (row 0 unused).
    """
    k, n = local.shape[:2]

    def joint_positions(root_q):
        pos = np.zeros((k, n, 3))
        r = root_q
        for j in range(1, n):
            pos[:, j] = pos[:, j - 1] + qrot(r, np.broadcast_to(offsets[j], (k, 3)))
            r = qmul(r, local[:, j])
        return pos

    def axis(pos):
        return pos[:, n // 2:].mean(1) - pos[:, : n // 2].mean(1)

    rest = np.concatenate([np.zeros((1, 3)), np.cumsum(offsets[1:], 0)])
    rest_axis = rest[n // 2:].mean(0) - rest[: n // 2].mean(0)
    bent = joint_positions(local[:, 0])
    root_q = qmul(quat_between(axis(bent), np.broadcast_to(rest_axis, (k, 3))), local[:, 0])
    pos = joint_positions(root_q)
    shift = rest.mean(0) - pos.mean(1)
    shift[:, 1] = rest[:, 1].min() - pos[..., 1].min(1)
    return root_q, np.asarray(root_rest, float) + shift


def _chain_motion(joints: list[int], local: np.ndarray, rig: Rig, motion: Motion) -> None:
    """Animate a spine chain with local rotations [K, n, 4], its root stabilised (see ``stabilised_root``)."""
    offsets = np.stack([rig.offsets[j] for j in joints])
    root_q, root_t = stabilised_root(local, offsets, rig.offsets[joints[0]])
    motion.rotations[joints[0]] = root_q
    motion.translations[joints[0]] = root_t
    for i, j in enumerate(joints[1:], 1):
        motion.rotations[j] = local[:, i]


def snake_slither(rng: np.random.Generator) -> Built:
    """A banded snake slithering (a travelling sideways wave along eight blended bones), seen at an angle."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 60, 75)
    body_c, band_c = pick_colours(rng, 2, ("green", "yellow", "red", "black", "brown", "orange", "teal", "grey",
                                           "white", "purple"))
    length, radius = rng.uniform(1.0, 1.4), rng.uniform(0.035, 0.055)
    bands = int(rng.integers(5, 10))
    freq, amp = float(rng.uniform(1.0, 1.5)), rng.uniform(0.28, 0.4)
    bones = 8

    s = np.linspace(0.0, 1.0, 48)  # 0 = tail tip, 1 = snout
    profile = radius * (0.12 + 0.88 * np.clip(s / 0.35, 0, 1) ** 0.6) * np.where(s > 0.9, 1 + 0.4 * np.sin(
        np.pi * (s - 0.9) / 0.1 * 0.9), 1.0)
    profile[-1] = 0.0  # close the snout
    tube = lathe(profile, (s - 0.5) * length, segments=14, caps=True)
    tube = transformed(tube, linear_map=_AXIS_FROM_Y["z"], translate=(0, radius, 0))
    t_along = tube.positions[:, 2] / length + 0.5
    band = 0.5 + 0.5 * np.tanh(6 * np.sin(2 * np.pi * bands * t_along))  # crisp-ish bands, smooth at the seams
    tube = coloured(tube, band[:, None] * linear(band_c) + (1 - band[:, None]) * linear(body_c))

    rig = Rig()
    head_z = 0.42 * length
    spacing = (0.42 + 0.48) * length / (bones - 1)
    joints, zs, tube = _body_chain(tube, head_z, head_z - spacing * (bones - 1), bones, rig, blend=0.04)
    eyes = [rigid(transformed(ellipsoid((0.012,) * 3, 8, 5), translate=(sx * radius * 0.9, radius * 1.5,
                                                                        0.47 * length)), joints[0]) for sx in (1, -1)]

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    k = np.arange(bones)[None, :]
    # sidewinding: a sideways wave plus a lifting wave a quarter period behind it, so the motion shows from the
    # side as well as from above
    yaw = amp * np.sin(phase[:, None] - 0.9 * k) * np.where(k == 0, 0.4, 1.0)
    lift = 0.55 * amp * np.cos(phase[:, None] - 0.9 * k) * np.where(k == 0, 0.0, 1.0)
    local = qmul(quat("y", yaw), quat("x", lift))
    motion = Motion(times)
    _chain_motion(joints, local, rig, motion)
    scene = Scene(heading, scale)
    scene.skinned(rig, [(tube, scene.material(None)), (merge(eyes), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "band_color": band_c, "bands": bands, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} snake with {band_c} bands slithers",
        f"{_a(_size_word(attrs) + body_c)} and {band_c} striped snake wriggles from side to side",
        f"{_a(_size_word(attrs) + body_c)} snake slithering in an S-shaped wave",
    ])
    return Built(scene.finish(), attrs, caption)


def caterpillar_crawl(rng: np.random.Generator) -> Built:
    """A segmented caterpillar crawling with humps that travel along it, seen from the side; vertex-coloured
    segments on a six-bone blended chain."""
    size, scale = _size(rng)
    heading = _sideways_heading(rng, 70, 90)
    body_c, stripe_c = pick_colours(rng, 2, ("green", "yellow", "orange", "red", "blue", "purple", "pink", "teal",
                                             "brown", "black", "white"))
    segs, seg_len, r0 = int(rng.integers(6, 10)), rng.uniform(0.09, 0.11), rng.uniform(0.05, 0.065)
    length = segs * seg_len
    freq, amp = float(rng.uniform(1.0, 1.4)), rng.uniform(0.25, 0.35)
    bones = 6

    s = np.linspace(0, 1, 6 * segs + 1)  # 0 = tail, 1 = front
    bumps = 0.82 + 0.18 * np.abs(np.sin(np.pi * segs * s))
    profile = r0 * bumps * np.sqrt(np.clip(1 - (2 * s - 1) ** 8, 0, 1))
    tube = lathe(profile, (s - 0.5) * length, segments=14, caps=False)
    tube = transformed(tube, linear_map=_AXIS_FROM_Y["z"], translate=(0, r0 * 1.2, 0))
    along = tube.positions[:, 2] / length + 0.5
    stripe = (0.5 + 0.5 * np.tanh(5 * np.cos(np.pi * segs * along)))[:, None]
    tube = coloured(tube, stripe * linear(stripe_c) + (1 - stripe) * linear(body_c))

    rig = Rig()
    front_z = 0.4 * length
    spacing = 0.85 * length / (bones - 1)
    joints, zs, tube = _body_chain(tube, front_z, front_z - spacing * (bones - 1), bones, rig, blend=0.05)
    head_r = r0 * 1.3
    head_at = np.array([0, r0 * 1.2 + 0.3 * r0, 0.5 * length + 0.6 * head_r])
    head = [rigid(transformed(ellipsoid((head_r,) * 3, 14, 8), translate=head_at), joints[0])]
    head_extra = [rigid(limb(0.008, head_at + (sx * 0.4 * head_r, 0.7 * head_r, 0),
                             head_at + (sx * 0.8 * head_r, 2.2 * head_r, 0.5 * head_r), segments=6), joints[0])
                  for sx in (1, -1)]
    head_extra += [rigid(transformed(ellipsoid((0.013,) * 3, 8, 5),
                                     translate=head_at + (sx * 0.55 * head_r, 0.35 * head_r, 0.72 * head_r)),
                         joints[0]) for sx in (1, -1)]
    legs = []
    for z in np.linspace(-0.42 * length, 0.42 * length, segs):
        for sx in (1, -1):
            leg = segment(cone(0.018, 1.0, 8), (sx * 0.6 * r0, r0 * 0.7, z), (sx * 0.7 * r0, 0.0, z))
            legs.append(leg)
    legs = merge(legs)
    legs = chain_bound(legs, -legs.positions[:, 2], -zs, joints, 0.05)

    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    k = np.arange(bones)[None, :]
    angles = amp * np.sin(phase[:, None] + 1.1 * k)  # humps run from tail to head
    motion = Motion(times)
    _chain_motion(joints, quat("x", angles), rig, motion)
    scene = Scene(heading, scale)
    scene.skinned(rig, [(tube, scene.material(None)), (merge(head), scene.material(body_c)),
                        (merge(head_extra + [legs]), scene.material("black"))], motion)
    attrs = {"size": size, "scale": scale,
             "color": body_c, "stripe_color": stripe_c, "segments": segs, "facing": _side(heading),
             "heading_deg": round(heading, 2), "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + body_c)} caterpillar with {stripe_c} stripes crawls to the {attrs['facing']}",
        f"{_a(_size_word(attrs) + body_c)} and {stripe_c} caterpillar inches along, humping its back",
        f"{_a(_size_word(attrs) + body_c)} segmented caterpillar crawling with a rippling body",
    ])
    return Built(scene.finish(), attrs, caption)


def waving_figure(rng: np.random.Generator) -> Built:
    """A figure facing the camera waving one raised arm: the arm is one tube bent at the elbow by two bones with
    smoothly blended weights; the body sways on a third."""
    size, scale = _size(rng)
    heading = float(rng.uniform(-25, 25))
    kind = str(rng.choice(["person", "robot", "snowman"]))
    side = float(rng.choice([-1.0, 1.0]))  # which side of the figure waves (+X: the viewer's right)
    freq, amp = cos_frequency(rng), rng.uniform(0.55, 0.8)
    scene = Scene(heading, scale)
    rig = Rig()
    root = rig.add("body", -1, (0, 0, 0))
    main, accent = [], []
    if kind == "snowman":
        body_c, accent_c = "white", str(rng.choice(["red", "blue", "green", "purple", "black", "orange"]))
        r1, r2, r3 = rng.uniform(0.22, 0.26), rng.uniform(0.16, 0.19), rng.uniform(0.11, 0.13)
        y1, y2 = r1, 2 * r1 + r2 * 0.8
        y3 = y2 + r2 * 0.8 + r3
        neck = rig.add("neck", root, (0, y2 + 0.6 * r2, 0))
        main += [rigid(transformed(ellipsoid((r,) * 3, 18, 12), translate=(0, y, 0)), root) for r, y in
                 ((r1, y1), (r2, y2))]
        main.append(rigid(transformed(ellipsoid((r3,) * 3, 16, 10), translate=(0, y3, 0)), neck))
        accent += [rigid(transformed(cylinder(r3 * 0.9, 0.16, 18), translate=(0, y3 + r3 * 0.7, 0)), neck),
                   rigid(transformed(cylinder(r3 * 1.5, 0.02, 18), translate=(0, y3 + r3 * 0.7, 0)), neck),
                   rigid(transformed(cylinder(r2 * 0.85, 0.05, 18), translate=(0, y2 + r2 * 0.6, 0)), root)]
        accent.append(rigid(segment(cone(0.025, 1.0, 8), (0, y3, r3 * 0.9), (0, y3, r3 * 1.6)), neck))
        shoulder_at, arm_r, arm_c = np.array([side * r2 * 0.9, y2 + 0.2 * r2, 0]), 0.015, "brown"
        still_arm = [(-side * r2 * 0.9, y2 + 0.1 * r2, 0), (-side * (r2 + 0.25), y2 - 0.05, 0)]
        arm_len = rng.uniform(0.42, 0.52)
    else:
        body_c, accent_c = pick_colours(rng, 2, _VIVID + ("white", "grey", "brown"))
        leg_h, torso_h = rng.uniform(0.35, 0.45), rng.uniform(0.32, 0.4)
        torso_w, head_r = rng.uniform(0.22, 0.3), rng.uniform(0.08, 0.11)
        neck = rig.add("neck", root, (0, leg_h + torso_h, 0))
        for sx in (1, -1):
            main.append(rigid(limb(0.045, (sx * torso_w / 4, leg_h + 0.02, 0), (sx * torso_w / 4, 0.0, 0)), root))
        if kind == "robot":
            main.append(rigid(box((torso_w, torso_h, 0.16), (0, leg_h + torso_h / 2, 0)), root))
            accent.append(rigid(box((2 * head_r,) * 3, (0, leg_h + torso_h + head_r + 0.02, 0)), neck))
            accent.append(rigid(limb(0.008, (0, leg_h + torso_h + 2 * head_r, 0),
                                     (0, leg_h + torso_h + 2 * head_r + 0.1, 0), 6), neck))
        else:
            torso = ellipsoid((torso_w / 2, torso_h / 2 + 0.03, 0.09))
            main.append(rigid(transformed(torso, translate=(0, leg_h + torso_h / 2, 0)), root))
            accent.append(rigid(transformed(ellipsoid((head_r,) * 3), translate=(0, leg_h + torso_h + head_r, 0)),
                                neck))
        shoulder_at = np.array([side * (torso_w / 2 + 0.03), leg_h + torso_h - 0.04, 0])
        arm_r, arm_c = 0.035, body_c
        still_arm = [(-side * (torso_w / 2 + 0.03), leg_h + torso_h - 0.04, 0),
                     (-side * (torso_w / 2 + 0.08), leg_h + torso_h * 0.1, 0)]
        arm_len = rng.uniform(0.44, 0.54)
    arm_dir = _normalize(np.array([side * 1.0, 0.55, 0.0]))  # rest pose: raised outwards
    upper = rig.add("upper_arm", root, shoulder_at)
    fore = rig.add("forearm", upper, arm_dir * arm_len * 0.5)
    tube = segment(cylinder(arm_r, 1.0, 10, rings=12), shoulder_at, shoulder_at + arm_dir * arm_len)
    along = (tube.positions - shoulder_at) @ arm_dir
    arm = [chain_bound(tube, along, [0.0, arm_len * 0.5], [upper, fore], blend=0.05)]
    hand = transformed(ellipsoid((arm_r * 1.6,) * 3, 10, 6), translate=shoulder_at + arm_dir * arm_len)
    arm.append(rigid(hand, fore))
    arm.append(rigid(limb(arm_r, *still_arm), root))

    times = time_grid(1 / freq)
    wave = np.cos(2 * np.pi * freq * times)
    motion = Motion(times)
    # bend the forearm up towards vertical, then wave it about the facing axis (Z) around that pose
    motion.rotations[fore] = quat("z", side * (1.0 + amp * wave))
    motion.rotations[upper] = quat("z", side * 0.12 * wave)
    motion.rotations[root] = quat("z", -side * 0.04 * wave)
    motion.rotations[neck] = quat("z", side * 0.08 * wave)
    pieces = [(merge(main), scene.material(body_c)), (merge(accent), scene.material(accent_c)),
              (merge(arm), scene.material(arm_c))]
    scene.skinned(rig, pieces, motion)
    attrs = {"size": size, "scale": scale,
             "kind": kind, "color": body_c, "accent_color": accent_c,
             "waving_side": "right" if side > 0 else "left", "heading_deg": round(heading, 2),
             "frequency_hz": round(freq, 3), "amplitude_rad": round(amp, 3)}
    if kind == "snowman":
        caption = _choose(rng, [f"{_a(_size_word(attrs) + 'snowman')} with {_a(accent_c)} hat waves its stick arm",
                                f"a snowman wearing {_a(accent_c)} hat and scarf waves hello"])
    else:
        what = "robot" if kind == "robot" else "figure"
        caption = _choose(rng, [f"{_a(_size_word(attrs) + body_c)} {what} waves one raised arm",
                                f"{_a(body_c)} {what} with {_a(accent_c)} head waves hello",
                                f"{_a(_size_word(attrs) + body_c)} {what} waving its arm back and forth"])
    return Built(scene.finish(), attrs, caption)


def jellyfish_pulse(rng: np.random.Generator) -> Built:
    """A jellyfish pulsing its bell (a contraction morph target) while its tentacles sway (two more targets) and
    it bobs upward with each stroke (node translation)."""
    size, scale = _size(rng)
    bell_c, tent_c = pick_colours(rng, 2, ("pink", "purple", "blue", "teal", "orange", "white", "yellow", "red"))
    bell_r, bell_h = rng.uniform(0.25, 0.32), rng.uniform(0.18, 0.28)
    tentacles, tent_len = int(rng.integers(6, 11)), rng.uniform(0.45, 0.65)
    contract = rng.uniform(0.25, 0.35)
    freq = cos_frequency(rng)

    theta = np.linspace(0.0, np.pi / 2, 14)
    under = np.linspace(0.0, 1.0, 5)
    profile_r = np.r_[bell_r * under[:-1] * 0.92, bell_r * np.cos(theta) * np.r_[1.0, np.ones(13)]]
    profile_y = np.r_[0.25 * bell_h * (1 - under[:-1]) ** 2, bell_h * np.sin(theta)]
    bell = lathe(profile_r, profile_y, segments=28, caps=False)
    tents = []
    for k in range(tentacles):
        a = 2 * np.pi * (k + 0.5) / tentacles
        at = np.array([0.8 * bell_r * np.sin(a), 0.01, 0.8 * bell_r * np.cos(a)])
        tents.append(limb(0.012, at, at - (0, tent_len, 0), segments=6, rings=10, top_radius=0.004))
    tents = merge(tents)

    def contracted(part: Part) -> Part:
        # squeeze the rim more than the crown and push the bell taller; tentacles follow the rim inward
        p = part.positions
        depth = np.clip(p[:, 1] / bell_h, 0, 1)
        factor = np.where(p[:, 1] >= 0, 1 - contract * (1 - depth), 1 - contract * 0.8)[:, None]
        moved = p * np.c_[factor, np.ones(len(p)), factor] + np.c_[np.zeros((len(p), 1)),
                                                                   0.2 * bell_h * depth, np.zeros((len(p), 1))]
        return replace(part, positions=moved)

    def swayed(part: Part, phase: float) -> Part:
        # tentacles curl sideways (around the bell's axis), more towards their tips
        p = part.positions
        hang = np.clip(-p[:, 1] / tent_len, 0, 1)
        tangent = _normalize(np.c_[p[:, 2], np.zeros(len(p)), -p[:, 0]])
        bend = 0.25 * bell_r * hang ** 1.5 * np.sin(np.pi * hang * 1.5 + phase)
        return replace(part, positions=p + tangent * bend[:, None])

    scene = Scene(0.0, scale)
    body = scene.node(name="jellyfish", translation=(0, tent_len, 0),
                      mesh=scene.mesh([(bell, scene.material(bell_c, roughness=0.3, double_sided=True)),
                                       (tents, scene.material(tent_c))],
                                      targets=[[contracted(bell), bell, bell],
                                               [contracted(tents), swayed(tents, 0.0), swayed(tents, np.pi / 2)]]))
    times = time_grid(1 / freq)
    phase = 2 * np.pi * freq * times
    squeeze = 0.5 - 0.5 * np.cos(phase)
    weights = np.stack([squeeze, np.sin(phase), np.cos(phase)], 1)
    rise = 0.06 * (bell_h + tent_len) * (0.5 - 0.5 * np.cos(phase - 0.6))
    scene.channels.append(Channel(body, "weights", times, weights))
    scene.channels.append(Channel(body, "translation", times, np.stack([0 * times, tent_len + rise, 0 * times], 1)))
    attrs = {"size": size, "scale": scale,
             "color": bell_c, "tentacle_color": tent_c, "tentacles": tentacles,
             "frequency_hz": round(freq, 3), "contraction": round(contract, 3)}
    caption = _choose(rng, [
        f"{_a(_size_word(attrs) + bell_c)} jellyfish pulses its bell and bobs upward",
        f"{_a(bell_c)} jellyfish with {tentacles} {tent_c} tentacles contracts and relaxes as it swims",
        f"{_a(_size_word(attrs) + bell_c)} jellyfish pumping its bell, tentacles swaying",
    ])
    return Built(scene.finish(), attrs, caption)
