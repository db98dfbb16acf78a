""" The admin API of hot deployment: `POST`/`PUT /zato/api/deploy/{file_name}` (the body is the
module's source) and `DELETE` to undeploy, with their OpenAPI descriptions. """

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from zato.builtin.hot_deploy.deployer import NotDeployed, deployer_of
from zato.builtin.hot_deploy.files import MAX_NAME_BYTES, InvalidFileName, check_file_name
from zato.server.admin_auth import SOURCE_BODY, check_admin
from zato.server.deployment import DeploymentError
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse


async def upload(request: HTTPRequest) -> HTTPResponse:
    """ `POST /zato/api/deploy/{file_name}`: the body is the module's source, sent as
    text/x-python or application/octet-stream (types a web page cannot send cross-site). """
    request.trace.channel = "admin.deploy"
    await check_admin(request, body_types=SOURCE_BODY)
    name = _file_name_of(request)
    if not request.body:
        raise HTTPError(400, f"Error 400 Bad Request: the body is empty; send the source of {name} as the body "
                             f"(curl --data-binary @{name})")
    deployer = deployer_of(request.server)
    try:
        result = await deployer.deploy(name, request.body, how=f"upload, cid {request.cid}", save_to_pickup=True)
    except DeploymentError as exc:
        raise HTTPError(400, f"Error 400 Bad Request: {exc}", extra={"file": name, "line": exc.line}) from None
    return HTTPResponse.json(asdict(result))


async def delete(request: HTTPRequest) -> HTTPResponse:
    """ `DELETE /zato/api/deploy/{file_name}`: undeploys the file's services and removes it. """
    request.trace.channel = "admin.deploy"
    await check_admin(request)
    name = _file_name_of(request)
    try:
        names = await deployer_of(request.server).undeploy(name, how=f"API, cid {request.cid}",
                                                           remove_from_pickup=True)
    except NotDeployed as exc:
        raise HTTPError(404, f"Error 404 Not Found: {exc}") from None
    return HTTPResponse.json({"file": name, "undeployed": names})


def _file_name_of(request: HTTPRequest) -> str:
    try:
        return check_file_name(request.path_params["file_name"], deployer_of(request.server).suffixes)
    except InvalidFileName as exc:
        raise HTTPError(400, f"Error 400 Bad Request: {exc}") from None


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_FILE_NAME = {
    "name": "file_name", "in": "path", "required": True,
    "description": f"a plain file name directly in the pickup directory (at most {MAX_NAME_BYTES} bytes in "
                   "UTF-8, no path separator, no '..', no control characters): a .py file of services, or a file "
                   "of a suffix an enabled plugin deploys (such as .bst)",
    # what check_file_name accepts: no '/', '\\', '..' or control characters, something before the suffix
    "schema": {"type": "string", "maxLength": MAX_NAME_BYTES,
               "pattern": r"^(?:[^./\\\x00-\x1f\x7f]|\.[^./\\\x00-\x1f\x7f])+\.[a-z0-9]{1,16}$"},
    "examples": {"module": {"value": "my_services.py"}}}
_DEPLOYED = {"description": "Deployed (or already deployed with this content: `unchanged`)", "content": {
    "application/json": {"schema": {"type": "object", "required": ["file", "services", "undeployed", "digest",
                                                                   "unchanged", "took_ms"], "properties": {
        "file": {"type": "string"}, "services": {"type": "array", "items": {"type": "string"},
                                                 "description": "the services the file holds now"},
        "undeployed": {"type": "array", "items": {"type": "string"},
                       "description": "services of the previous version that are gone"},
        "digest": {"type": "string", "description": "SHA-256 of the source"}, "unchanged": {"type": "boolean"},
        "took_ms": {"type": "number"}}}}}}


def _deploy_operation(method: str) -> dict[str, Any]:
    return {
        "operationId": f"deploy_{method}", "tags": ["deployment"], "parameters": [_FILE_NAME],
        "summary": "Deploy (or redeploy) a module of services, saved in the pickup directory; the body is its source",
        "requestBody": {"required": True, "content": {
            # the source as bytes: UTF-8 unless it declares another encoding (PEP 263)
            "text/x-python": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}},
        "responses": {
            "200": _DEPLOYED,
            "400": {"description": "The file name is not a plain .py name, the body is empty, or the module does not "
                                   "import (`file` and `line` say where); what was deployed before keeps serving",
                    "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}, {
                        "type": "object", "properties": {"file": {"type": "string"},
                                                         "line": {"type": ["integer", "null"]}}}]}}}}}}


DEPLOY_OPENAPI = {"post": _deploy_operation("post"), "put": _deploy_operation("put")}
UNDEPLOY_OPENAPI = {"delete": {
    "operationId": "undeploy", "tags": ["deployment"], "parameters": [_FILE_NAME],
    "summary": "Undeploy a module's services and remove it from the pickup directory",
    "responses": {
        "200": {"description": "Undeployed", "content": {"application/json": {"schema": {
            "type": "object", "required": ["file", "undeployed"], "properties": {
                "file": {"type": "string"}, "undeployed": {"type": "array", "items": {"type": "string"}}}}}}},
        "400": {"description": "The file name is not a plain .py name", "content": _ERROR},
        "404": {"description": "The file is neither deployed nor in the pickup directory", "content": _ERROR}}}}
