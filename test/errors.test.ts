/** The open registry of coded errors: plugins and apps define theirs like core does. */
import { expect } from 'chai'
import { defineErrors, isErrorCode, isMeshError, MeshError, meshError } from 'meshkit'

describe('coded errors (defineErrors)', () => {
  it('a plugin defines its codes with messages and hints; user errors are flagged', () => {
    const errors = defineErrors({
      GREETER_ERR_NO_NAME: {
        user: true,
        message: (plugin: string) => `${plugin} needs a name.`,
        hint: (plugin: string) => `Pass ${plugin}({ name: 'alice' }).`,
      },
      GREETER_ERR_BROKEN: { user: false, message: () => 'the greeter broke' },
    })
    const err = errors.create('GREETER_ERR_NO_NAME', ['greeter'])
    expect(err).to.be.instanceOf(MeshError)
    expect(err.code).to.equal('GREETER_ERR_NO_NAME')
    expect(err.userError).to.equal(true)
    expect(err.describe()).to.equal(
      "GREETER_ERR_NO_NAME: greeter needs a name.\n  Fix: Pass greeter({ name: 'alice' }).",
    )
    expect(errors.is(err)).to.equal(true)
    expect(errors.is(err, 'GREETER_ERR_BROKEN')).to.equal(false)
    expect(isMeshError(err, 'GREETER_ERR_NO_NAME')).to.equal(true)
    expect(errors.create('GREETER_ERR_BROKEN', []).userError).to.equal(false)
    expect(isErrorCode('GREETER_ERR_NO_NAME')).to.equal(true)
    expect(errors.codes).to.deep.equal(['GREETER_ERR_NO_NAME', 'GREETER_ERR_BROKEN'])
    // a MeshError rebuilt from its code (e.g. by the control client) keeps the user flag
    expect(new MeshError('GREETER_ERR_NO_NAME', 'again').userError).to.equal(true)
  })

  it('refuses a code defined twice and a code without a prefix', () => {
    defineErrors({ TWICE_ERR_X: { user: true, message: () => 'x' } })
    expect(() => defineErrors({ TWICE_ERR_X: { user: true, message: () => 'y' } })).to.throw(
      TypeError,
      /defined twice/,
    )
    expect(() => defineErrors({ lower: { user: true, message: () => 'x' } })).to.throw(
      TypeError,
      /UPPER_SNAKE_CASE/,
    )
    expect(() => defineErrors({ MESH_ERR_CONFIG_INVALID: { user: true, message: () => 'x' } })).to.throw(
      TypeError,
      /defined twice/,
    )
  })

  it("core's codes stay where they were", () => {
    const err = meshError('MESH_ERR_NO_TRANSPORT', [])
    expect(err.userError).to.equal(true)
    expect(isErrorCode('MESH_ERR_NO_TRANSPORT')).to.equal(true)
  })
})
