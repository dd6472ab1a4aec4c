"""Headless OpenGL rasterizer for posed meshes (moderngl on EGL: Mesa llvmpipe on a CPU, the driver on a GPU).

Pipeline per :meth:`Renderer.render`:

1. *Scene pass* into a multisample framebuffer: linear, premultiplied colour (RGBA16F, cleared to transparent
   black) and a 24-bit depth texture for the depth test.
2. *Resolve pass*, a full-screen triangle that reads every sample itself (a blit would average depths across
   silhouettes): colour and coverage are averaged, colour is turned into straight alpha and sRGB-encoded, and
   depth is the *nearest* covered sample, linearised to ``−z_view``. Edge pixels therefore get the depth of the
   closest surface that touches them, never a blend of foreground and background. The depth comes from the
   hardware depth buffer because it is exact per sample; a shaded depth varying is evaluated once per pixel
   and extrapolates wildly on silhouette pixels (even with ``centroid``, on llvmpipe).
3. Read back, flipping rows so that row 0 is the top of the image, matching :func:`diffusion4d.cameras.project`.

Materials follow glTF: OPAQUE ignores alpha, MASK discards fragments below the cutoff, BLEND primitives are drawn
after the rest, farthest first, with premultiplied over-blending and no depth writes (so the coverage alpha of the
output includes their opacity); single-sided primitives are back-face culled where asked (``cull_single_sided``);
the emissive colour is added to the lit colour.

Lighting is Lambertian and fixed in world space (a sky/ground hemisphere plus three directional lights), so a
surface point has the same colour from every camera: the 3D Gaussian reconstruction downstream depends on that.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from diffusion4d.assets.mesh import PosedMesh, PosedPrimitive
from diffusion4d.cameras import projection_matrix

# --------------------------------------------------------------------------------------------------------------
# Lighting (linear irradiance factors; white light). Tuned so that a white surface never exceeds ~0.93 (no
# clipping) and never drops below ~0.17 (sRGB ≈ 115/255), whichever way it faces.
# --------------------------------------------------------------------------------------------------------------

#: Hemisphere ambient: normals pointing straight up (+Y) get the sky value, straight down the ground value.
AMBIENT_SKY = 0.30
AMBIENT_GROUND = 0.15


def _unit(v) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    return tuple(float(x) for x in a / np.linalg.norm(a))


#: Directional lights as (unit direction *towards* the light in world axes, intensity): a key light above the
#: front-right, a fill from the back-left and a weak bounce from below-behind, so no side of an object is dark.
LIGHTS: tuple[tuple[tuple[float, float, float], float], ...] = (
    (_unit((0.5, 0.8, 0.6)), 0.65),
    (_unit((-0.7, 0.3, -0.4)), 0.30),
    (_unit((0.2, -0.6, -0.7)), 0.15),
)


def light_intensity(normals: np.ndarray) -> np.ndarray:
    """Linear irradiance factor for unit world-space normals [..., 3] → [...]; the shader computes the same."""
    n = np.asarray(normals, dtype=np.float64)
    up = 0.5 + 0.5 * n[..., 1]
    total = AMBIENT_GROUND + (AMBIENT_SKY - AMBIENT_GROUND) * up
    for direction, intensity in LIGHTS:
        total = total + intensity * np.clip(n @ np.asarray(direction), 0.0, None)
    return total


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer function (IEC 61966-2-1) on linear values in [0, 1] (float in, float out)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`linear_to_srgb` (float in [0, 1])."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


# --------------------------------------------------------------------------------------------------------------
# Shaders
# --------------------------------------------------------------------------------------------------------------

_SCENE_VS = """
#version 330
uniform mat4 u_view;  // world -> camera (OpenGL camera axes)
uniform mat4 u_proj;
in vec3 in_position;
in vec3 in_normal;
in vec4 in_color;
in vec2 in_uv;
in vec2 in_uv_emissive;
out vec3 v_world;
out vec3 v_normal;
out vec4 v_color;
out vec2 v_uv;
out vec2 v_uv_emissive;
void main() {
    vec4 cam = u_view * vec4(in_position, 1.0);
    v_world = in_position;
    v_normal = in_normal;
    v_color = in_color;
    v_uv = in_uv;
    v_uv_emissive = in_uv_emissive;
    gl_Position = u_proj * cam;
}
"""

_SCENE_FS = """
#version 330
uniform vec3 u_eye;  // camera centre, world space
uniform bool u_textured;
uniform sampler2D u_texture;  // sRGB internal format: texture() returns linear colour
uniform bool u_emissive_textured;
uniform sampler2D u_emissive_texture;  // sRGB as well
uniform vec3 u_emissive;  // linear emissiveFactor x emissiveStrength
uniform int u_alpha_mode;  // ALPHA_OPAQUE, ALPHA_MASK or ALPHA_BLEND (defined below)
uniform float u_alpha_cutoff;
uniform float u_sky;
uniform float u_ground;
uniform vec3 u_light_dir[3];
uniform float u_light_k[3];
in vec3 v_world;
in vec3 v_normal;
in vec4 v_color;
in vec2 v_uv;
in vec2 v_uv_emissive;
layout(location = 0) out vec4 out_color;
const int ALPHA_OPAQUE = 0;
const int ALPHA_MASK = 1;
const int ALPHA_BLEND = 2;

vec3 shading_normal() {
    // Geometric normal of the triangle, turned towards the camera: this is the side being seen, whatever the
    // winding (gl_FrontFacing would trust the winding, which many assets get wrong).
    vec3 ng = cross(dFdx(v_world), dFdy(v_world));
    if (dot(ng, u_eye - v_world) < 0.0) ng = -ng;
    float lg = length(ng);
    ng = lg > 0.0 ? ng / lg : normalize(u_eye - v_world);
    // The authored normal, flipped onto the seen side (back faces, inverted normals); degenerate -> geometric.
    float ln = length(v_normal);
    if (!(ln > 1e-12)) return ng;  // also catches NaN normals
    vec3 n = v_normal / ln;
    return dot(n, ng) < 0.0 ? -n : n;
}

void main() {
    vec3 n = shading_normal();
    float light = mix(u_ground, u_sky, 0.5 + 0.5 * n.y);
    for (int i = 0; i < 3; ++i) light += u_light_k[i] * max(dot(n, u_light_dir[i]), 0.0);
    vec4 base = v_color;
    if (u_textured) base *= texture(u_texture, v_uv);
    if (u_alpha_mode == ALPHA_MASK && base.a < u_alpha_cutoff) discard;
    vec3 emissive = u_emissive;
    if (u_emissive_textured) emissive *= texture(u_emissive_texture, v_uv_emissive).rgb;
    vec3 rgb = clamp(base.rgb * light + emissive, 0.0, 1.0);
    // OPAQUE and MASK ignore alpha (spec), so their alpha is coverage only. BLEND writes premultiplied colour
    // for glBlendFunc(ONE, ONE_MINUS_SRC_ALPHA), whose alpha accumulates as a coverage mask.
    float a = u_alpha_mode == ALPHA_BLEND ? clamp(base.a, 0.0, 1.0) : 1.0;
    out_color = vec4(rgb * a, a);
}
"""

_RESOLVE_VS = """
#version 330
void main() {
    // One triangle covering the viewport: (-1,-1), (3,-1), (-1,3).
    vec2 p = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
    gl_Position = vec4(p, 0.0, 1.0);
}
"""

_RESOLVE_FS = """
#version 330
#if SAMPLES > 1
uniform sampler2DMS u_color;
uniform sampler2DMS u_depth;
#else
uniform sampler2D u_color;
uniform sampler2D u_depth;
#endif
uniform float u_near;
uniform float u_far;
layout(location = 0) out vec4 out_rgba;         // straight-alpha sRGB colour + coverage (RGBA8)
layout(location = 1) out vec2 out_depth_alpha;  // nearest depth, coverage (RG32F)

vec3 linear_to_srgb(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, 12.92 * c, vec3(lessThanEqual(c, vec3(0.0031308))));
}

float view_depth(float d) {
    // Window depth in [0, 1] -> distance along the viewing axis, inverting cameras.projection_matrix.
    float z_ndc = 2.0 * d - 1.0;
    return 2.0 * u_near * u_far / (u_far + u_near - z_ndc * (u_far - u_near));
}

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 sum = vec4(0.0);
    float nearest = 3.0e38;
    for (int i = 0; i < SAMPLES; ++i) {
        sum += texelFetch(u_color, p, i);
        // Depth stays at its clear value 1.0 where only blended surfaces (which write no depth) or nothing was
        // drawn; such samples have no surface depth.
        float d = texelFetch(u_depth, p, i).r;
        if (d < 1.0) nearest = min(nearest, d);
    }
    float alpha = sum.a / float(SAMPLES);
    // The clear colour is transparent black, so the average is premultiplied: divide by coverage.
    vec3 straight = sum.a > 0.0 ? sum.rgb / sum.a : vec3(0.0);
    out_rgba = vec4(sum.a > 0.0 ? linear_to_srgb(straight) : vec3(0.0), alpha);
    out_depth_alpha = vec2(nearest < 2.0 ? view_depth(nearest) : 0.0, alpha);
}
"""

# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------

_GL_SRGB8_ALPHA8 = 0x8C43
#: Vertex layout: position 3f, normal 3f, colour 4f, uv 2f, emissive uv 2f.
_VERTEX_FLOATS = 14
_ALPHA_MODES = {"OPAQUE": 0, "MASK": 1, "BLEND": 2}  # the shader's ALPHA_* constants
_BACKEND = "egl"


@dataclass
class RenderOutput:
    rgba: np.ndarray  # [H, W, 4] uint8, straight alpha, sRGB colour, transparent background (0, 0, 0, 0)
    depth: np.ndarray  # [H, W] float32, −z_view of the nearest non-BLEND surface (positive), else 0
    alpha: np.ndarray  # [H, W] float32 in [0, 1], coverage (multiples of 1/samples)


class Renderer:
    """Rasterize :class:`PosedMesh` es from OpenGL-axes cameras into RGBA, depth and coverage images.

    One headless EGL context per instance; several instances may coexist in a process (each call makes its own
    context current). Contexts do not survive ``fork``: create renderers inside worker processes.

    ``samples``: MSAA samples per pixel (0 or 1 = no anti-aliasing); more than the driver allows is clamped with
    a warning (llvmpipe allows 4). Textures are cached across calls by array identity (``id`` + shape + dtype),
    holding a reference so an id cannot be reused while cached; mutate a texture array in place and the cache
    will not notice.
    ``cull_single_sided``: back-face cull the primitives of single-sided materials, as the glTF spec says (default
    off: both sides are drawn, as Blender drew them in the renders our data is checked against).
    """

    def __init__(
        self,
        width: int = 256,
        height: int = 256,
        samples: int = 4,
        near: float = 0.05,
        far: float = 20.0,
        texture_cache_size: int = 32,
        texture_cache_bytes: int = 1 << 30,
        cull_single_sided: bool = False,
    ):
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if not 0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        self.width, self.height = int(width), int(height)
        self.near, self.far = float(near), float(far)
        self._texture_cache_size = int(texture_cache_size)
        self._texture_cache_bytes = int(texture_cache_bytes)
        # The glTF spec culls the back faces of single-sided materials, but our orbits are checked against Blender's
        # renders, which drew both sides (BENCHMARKS.md, issue 3): flat single-sided assets (AnimatedTriangle,
        # SimpleSkin, SimpleMorph) would vanish from half of an orbit. So culling is opt-in.
        self.cull_single_sided = bool(cull_single_sided)
        self._textures: OrderedDict = OrderedDict()  # key -> (array ref, moderngl.Texture, nbytes)
        self._vbo = self._ibo = self._vao = None
        self._ctx = _create_context()
        with self._ctx:
            self.samples = self._clamp_samples(samples)
            self._max_texture_size = int(self._ctx.info["GL_MAX_TEXTURE_SIZE"])
            #: what drew the images, recorded in each asset's metadata.json
            self.description = f"moderngl/{_BACKEND}: {self._ctx.info['GL_RENDERER']}, MSAA {self.samples}x"
            self._build_programs()
            self._build_framebuffers()
            self._white = self._ctx.texture((1, 1), 4, b"\xff\xff\xff\xff")  # bound when untextured

    # -- context management ------------------------------------------------------------------------------------

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release every GL object and the context; idempotent."""
        if self._ctx is None:
            return
        with self._ctx:
            for _, tex, _ in self._textures.values():
                tex.release()
            self._textures.clear()
            for obj in (self._vao, self._vbo, self._ibo, self._resolve_vao, *self._gl_objects):
                if obj is not None:
                    obj.release()
        self._ctx.release()
        self._ctx = None

    # -- rendering --------------------------------------------------------------------------------------------

    def render(self, mesh: PosedMesh, c2w: np.ndarray, x_fov: float, y_fov: float) -> RenderOutput:
        """Render ``mesh`` from camera-to-world ``c2w`` [4, 4] (OpenGL camera axes) with fovs in radians."""
        if self._ctx is None:
            raise RuntimeError("Renderer is closed")
        c2w = np.asarray(c2w, dtype=np.float64)
        if c2w.shape != (4, 4):
            raise ValueError(f"c2w must be [4, 4], got {c2w.shape}")
        prims = [p for p in mesh.primitives if len(p.indices)]
        with self._ctx:
            self._set_camera(c2w, x_fov, y_fov)
            self._draw_scene(prims)
            self._resolve()
            return self._read_back()

    # -- setup ------------------------------------------------------------------------------------------------

    def _clamp_samples(self, samples: int) -> int:
        samples = max(int(samples), 0)
        allowed = int(self._ctx.max_samples)
        if samples > allowed:
            warnings.warn(f"{samples} MSAA samples requested, the driver allows {allowed}; using {allowed}",
                          stacklevel=2)
            samples = allowed
        return samples if samples > 1 else 0

    def _build_programs(self) -> None:
        ctx = self._ctx
        self._scene = ctx.program(vertex_shader=_SCENE_VS, fragment_shader=_SCENE_FS)
        n_samples = max(self.samples, 1)
        resolve_fs = _RESOLVE_FS.replace("#version 330", f"#version 330\n#define SAMPLES {n_samples}", 1)
        self._resolve_prog = ctx.program(vertex_shader=_RESOLVE_VS, fragment_shader=resolve_fs)
        self._resolve_vao = ctx.vertex_array(self._resolve_prog, [])
        self._scene["u_sky"].value = AMBIENT_SKY
        self._scene["u_ground"].value = AMBIENT_GROUND
        self._scene["u_light_dir"].write(np.array([d for d, _ in LIGHTS], dtype="f4").tobytes())
        self._scene["u_light_k"].write(np.array([k for _, k in LIGHTS], dtype="f4").tobytes())
        self._scene["u_texture"].value = 0
        self._scene["u_emissive_texture"].value = 1
        self._resolve_prog["u_color"].value = 0
        self._resolve_prog["u_depth"].value = 1
        self._resolve_prog["u_near"].value = self.near
        self._resolve_prog["u_far"].value = self.far

    def _build_framebuffers(self) -> None:
        """Multisample scene targets and the single-sample output targets, created once and reused."""
        ctx, size, s = self._ctx, (self.width, self.height), self.samples
        self._ms_color = ctx.texture(size, 4, samples=s, dtype="f2")
        self._ms_depth = ctx.depth_texture(size, samples=s)
        if s == 0:  # single-sample textures carry sampler state that would spoil texelFetch
            self._ms_color.filter = self._ms_depth.filter = (ctx.NEAREST, ctx.NEAREST)
            self._ms_depth.compare_func = ""  # read raw depth values, not shadow comparisons
        self._scene_fbo = ctx.framebuffer([self._ms_color], self._ms_depth)
        self._out_rgba = ctx.renderbuffer(size, 4, dtype="f1")
        self._out_depth_alpha = ctx.renderbuffer(size, 2, dtype="f4")
        self._out_fbo = ctx.framebuffer([self._out_rgba, self._out_depth_alpha])
        self._gl_objects = [
            self._scene, self._resolve_prog, self._scene_fbo, self._out_fbo,
            self._ms_color, self._ms_depth, self._out_rgba, self._out_depth_alpha,
        ]  # fmt: skip

    # -- per-frame steps ----------------------------------------------------------------------------------------

    def _set_camera(self, c2w: np.ndarray, x_fov: float, y_fov: float) -> None:
        view = np.linalg.inv(c2w)
        proj = projection_matrix(x_fov, y_fov, self.near, self.far)
        # GLSL matrices are column-major: upload the transpose.
        self._scene["u_view"].write(view.T.astype("f4").tobytes())
        self._scene["u_proj"].write(proj.T.astype("f4").tobytes())
        self._scene["u_eye"].value = tuple(float(x) for x in c2w[:3, 3])

    def _draw_scene(self, prims: list[PosedPrimitive]) -> None:
        ctx = self._ctx
        self._scene_fbo.use()
        self._scene_fbo.viewport = (0, 0, self.width, self.height)
        self._scene_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        if not prims:
            return
        ctx.front_face, ctx.cull_face = "ccw", "back"
        ctx.blend_func = ctx.ONE, ctx.ONE_MINUS_SRC_ALPHA  # premultiplied "over"
        ranges = self._upload_geometry(prims)
        for prim, (first, count) in self._draw_order(prims, ranges):
            mode = str(prim.alpha_mode).upper()
            if mode not in _ALPHA_MODES:
                raise ValueError(f"unknown alpha mode {prim.alpha_mode!r}")
            flags = ctx.DEPTH_TEST
            if self.cull_single_sided and not prim.double_sided:  # spec: single-sided materials are culled
                flags |= ctx.CULL_FACE
            if mode == "BLEND":
                flags |= ctx.BLEND
            ctx.enable_only(flags)
            # Blended surfaces are depth-tested against the opaque ones but do not occlude each other.
            self._scene_fbo.depth_mask = mode != "BLEND"
            self._scene["u_alpha_mode"].value = _ALPHA_MODES[mode]
            self._scene["u_alpha_cutoff"].value = float(prim.alpha_cutoff)
            texture = self._texture_for(prim.texture, prim.uvs)
            self._scene["u_textured"].value = texture is not None
            (texture or self._white).use(location=0)
            emissive = tuple(float(x) for x in prim.emissive)
            emissive_texture = self._texture_for(prim.emissive_texture, prim.emissive_uvs) if any(emissive) else None
            self._scene["u_emissive"].value = emissive
            self._scene["u_emissive_textured"].value = emissive_texture is not None
            (emissive_texture or self._white).use(location=1)
            self._vao.render(ctx.TRIANGLES, vertices=count, first=first)
        self._scene_fbo.depth_mask = True

    def _draw_order(self, prims: list[PosedPrimitive], ranges: list[tuple[int, int]]):
        """(primitive, range) pairs: non-BLEND ones in mesh order, then BLEND ones farthest centroid first."""
        eye = np.asarray(self._scene["u_eye"].value, dtype=np.float64)
        pairs = list(zip(prims, ranges))
        opaque = [pr for pr in pairs if str(pr[0].alpha_mode).upper() != "BLEND"]
        blend = [pr for pr in pairs if str(pr[0].alpha_mode).upper() == "BLEND"]

        def distance(pr) -> float:
            used = np.asarray(pr[0].positions)[np.unique(np.asarray(pr[0].indices))]
            return float(np.linalg.norm(used.mean(axis=0) - eye))

        return opaque + sorted(blend, key=distance, reverse=True)

    def _resolve(self) -> None:
        ctx = self._ctx
        ctx.enable_only(ctx.NOTHING)
        self._out_fbo.use()
        self._out_fbo.viewport = (0, 0, self.width, self.height)
        self._ms_color.use(location=0)
        self._ms_depth.use(location=1)
        self._resolve_vao.render(ctx.TRIANGLES, vertices=3)

    def _read_back(self) -> RenderOutput:
        h, w = self.height, self.width
        rgba = np.frombuffer(self._out_fbo.read(components=4, attachment=0, dtype="f1"), np.uint8)
        da = np.frombuffer(self._out_fbo.read(components=2, attachment=1, dtype="f4"), np.float32)
        # GL rows run bottom-up; ours run top-down like cameras.project.
        rgba = np.ascontiguousarray(rgba.reshape(h, w, 4)[::-1])
        da = da.reshape(h, w, 2)[::-1]
        return RenderOutput(rgba=rgba, depth=np.ascontiguousarray(da[..., 0]), alpha=np.ascontiguousarray(da[..., 1]))

    # -- geometry -----------------------------------------------------------------------------------------------

    def _upload_geometry(self, prims: list[PosedPrimitive]) -> list[tuple[int, int]]:
        """Pack all primitives into one vertex and one index buffer; return (first index, index count) each."""
        vertices, indices, ranges = _pack_primitives(prims)
        self._ensure_capacity(vertices.nbytes, indices.nbytes)
        self._vbo.write(vertices)
        self._ibo.write(indices)
        return ranges

    def _ensure_capacity(self, vertex_bytes: int, index_bytes: int) -> None:
        """Grow the shared buffers geometrically, so animated meshes do not reallocate every frame."""
        if self._vbo is not None and self._vbo.size >= vertex_bytes and self._ibo.size >= index_bytes:
            return
        vsize = max(vertex_bytes, self._vbo.size if self._vbo else 0)
        isize = max(index_bytes, self._ibo.size if self._ibo else 0)
        for obj in (self._vao, self._vbo, self._ibo):
            if obj is not None:
                obj.release()
        self._vbo = self._ctx.buffer(reserve=_next_pow2(vsize))
        self._ibo = self._ctx.buffer(reserve=_next_pow2(isize))
        layout = "3f 3f 4f 2f 2f"
        attrs = ("in_position", "in_normal", "in_color", "in_uv", "in_uv_emissive")
        self._vao = self._ctx.vertex_array(
            self._scene, [(self._vbo, layout, *attrs)], index_buffer=self._ibo, index_element_size=4
        )

    # -- textures -----------------------------------------------------------------------------------------------

    def _texture_for(self, arr: np.ndarray | None, uvs: np.ndarray | None):
        """The cached GL texture of ``arr`` (uploading it on first use), or None when either is missing."""
        if arr is None or uvs is None:
            return None
        key = (id(arr), arr.shape, arr.dtype.str)
        hit = self._textures.get(key)
        if hit is not None and hit[0] is arr:
            self._textures.move_to_end(key)
            return hit[1]
        texture = self._upload_texture(arr)
        nbytes = texture.width * texture.height * 4 * 4 // 3  # with the mip chain
        self._textures[key] = (arr, texture, nbytes)
        self._evict_textures()
        return texture

    def _upload_texture(self, arr: np.ndarray):
        rgba = _as_rgba8(arr)
        # Data row 0 becomes texture row t=0, so glTF uv (0, 0) samples the image's top-left: no flip needed.
        step = math.ceil(max(rgba.shape[:2]) / self._max_texture_size)
        if step > 1:  # larger than the driver allows: subsample rather than fail
            rgba = np.ascontiguousarray(rgba[::step, ::step])
        h, w = rgba.shape[:2]
        tex = self._ctx.texture((w, h), 4, rgba.tobytes(), internal_format=_GL_SRGB8_ALPHA8)
        tex.build_mipmaps()
        tex.filter = (self._ctx.LINEAR_MIPMAP_LINEAR, self._ctx.LINEAR)
        tex.repeat_x = tex.repeat_y = True
        return tex

    def _evict_textures(self) -> None:
        """Drop least-recently-used textures beyond the count or byte budget (always keeping the newest)."""
        total = sum(nb for _, _, nb in self._textures.values())
        while len(self._textures) > 1 and (
            len(self._textures) > self._texture_cache_size or total > self._texture_cache_bytes
        ):
            _, (_, tex, nbytes) = self._textures.popitem(last=False)
            tex.release()
            total -= nbytes


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _create_context():
    """A standalone headless EGL context, or a RuntimeError that says what to install."""
    import moderngl

    try:
        ctx = moderngl.create_context(standalone=True, backend=_BACKEND, require=330)
    except Exception as exc:  # moderngl/glcontext raise a zoo of types for a missing libEGL or driver
        raise RuntimeError(
            f"could not create a headless OpenGL 3.3 context with moderngl's {_BACKEND!r} backend ({exc}). "
            "Install Mesa's EGL and drivers (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri); "
            "on an NVIDIA machine the driver's EGL library (libnvidia-gl / libEGL_nvidia) works as well."
        ) from exc
    return ctx


def _pack_primitives(prims: list[PosedPrimitive]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Interleave vertices [ΣN, 14] float32 and offset indices [ΣF·3] uint32; ranges are (first, count)."""
    total_v = sum(len(p.positions) for p in prims)
    vertices = np.zeros((total_v, _VERTEX_FLOATS), dtype=np.float32)
    index_parts, ranges = [], []
    v0 = i0 = 0
    for prim in prims:
        n = len(prim.positions)
        block = vertices[v0 : v0 + n]
        block[:, 0:3] = _check_shape(prim.positions, (n, 3), "positions")
        block[:, 3:6] = _check_shape(prim.normals, (n, 3), "normals")
        block[:, 6:10] = _colors_rgba(prim.colors, n)
        if prim.uvs is not None:
            block[:, 10:12] = _check_shape(prim.uvs, (n, 2), "uvs")
        if prim.emissive_uvs is not None:
            block[:, 12:14] = _check_shape(prim.emissive_uvs, (n, 2), "emissive_uvs")
        idx = np.asarray(prim.indices).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"primitive indices out of range [0, {n})")
        index_parts.append(idx.astype(np.uint32) + np.uint32(v0))
        ranges.append((i0, idx.size))
        v0 += n
        i0 += idx.size
    return vertices, np.concatenate(index_parts), ranges


def _check_shape(arr: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise ValueError(f"primitive {name} must have shape {list(shape)}, got {list(arr.shape)}")
    return arr


def _colors_rgba(colors: np.ndarray | None, n: int) -> np.ndarray:
    """Vertex colours [n, 4]; None means white and [n, 3] gets alpha 1."""
    if colors is None:
        return np.ones((n, 4), dtype=np.float32)
    colors = np.asarray(colors)
    if colors.shape == (n, 3):
        return np.concatenate([colors, np.ones((n, 1), colors.dtype)], axis=1)
    return _check_shape(colors, (n, 4), "colors")


def _as_rgba8(arr: np.ndarray) -> np.ndarray:
    """A texture as contiguous [H, W, 4] uint8 (grey and RGB get expanded; alpha is unused but kept)."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"textures must be uint8 sRGB, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or 0 in arr.shape:
        raise ValueError(f"texture must be [H, W, C] with C in 1..4, got shape {list(arr.shape)}")
    c = arr.shape[2]
    if c in (1, 2):  # grey (+ alpha)
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:] if c == 2 else _opaque(arr)], axis=2)
    elif c == 3:
        arr = np.concatenate([arr, _opaque(arr)], axis=2)
    return np.ascontiguousarray(arr)


def _opaque(arr: np.ndarray) -> np.ndarray:
    return np.full(arr.shape[:2] + (1,), 255, np.uint8)


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 255).bit_length()
